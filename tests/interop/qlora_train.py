"""QLoRA on the CPU, as a user trains an adapter: the model loaded through transformers with bitsandbytes'
NF4 (double quant, bf16 compute), a PEFT LoRA on every linear layer, AdamW on random windows of a text.

usage: qlora_train.py MODEL_DIR TEXT OUT_ADAPTER_DIR [STEPS]   (trains on the text's first 80%)
"""
import json
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

model_dir, text_path, out_dir = sys.argv[1:4]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 200
torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(model_dir)
ids = torch.tensor(tokenizer(open(text_path, encoding="utf-8").read())["input_ids"])
train = ids[: int(len(ids) * 0.8)]
quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
model = AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=quantization, device_map="cpu", dtype=torch.bfloat16)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
window, batch = 128, 4
start, losses = time.time(), []
for step in range(steps):
    offsets = torch.randint(0, len(train) - window, (batch,))
    x = torch.stack([train[o:o + window] for o in offsets])
    loss = model(input_ids=x, labels=x).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    losses.append(loss.item())
    if (step + 1) % 10 == 0:  # progress on stderr: the last line of stdout is the result
        print(f"step {step + 1}/{steps} loss {losses[-1]:.4f} {time.time() - start:.0f} s", file=sys.stderr, flush=True)
model.save_pretrained(out_dir)
print(json.dumps({"steps": steps, "first_loss": sum(losses[:10]) / len(losses[:10]), "last_loss": sum(losses[-10:]) / len(losses[-10:]),
                  "train_tokens": len(train), "seconds": time.time() - start}))
