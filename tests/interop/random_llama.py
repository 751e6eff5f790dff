"""What the transformers + bitsandbytes interop proofs start from: a small random Llama, saved as
transformers saves any model, and its logits on random tokens as the reference."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def save_random_llama(base_dir):
    """Saves the model to base_dir; returns it (moved to the GPU), the tokens and its logits on them."""
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=512, intermediate_size=1536, num_hidden_layers=2, num_attention_heads=8,
                         num_key_value_heads=4, vocab_size=1024, max_position_embeddings=256, torch_dtype="bfloat16")
    base = LlamaForCausalLM(config).to(torch.bfloat16)
    base.save_pretrained(base_dir, safe_serialization=True)
    tokens = torch.randint(0, config.vocab_size, (2, 64), device="cuda")
    with torch.no_grad():
        ref_logits = base.cuda()(tokens).logits.float()
    return base, tokens, ref_logits
