// Hopper's bulk copies (cp.async.bulk, the TMA engine without a tensor map) and the shared-memory
// barriers they complete. One thread asks for a contiguous run of global bytes to land in shared memory;
// the copy engine moves it while every thread computes on earlier runs, and the barrier's phase flips
// when the bytes have arrived. A kernel keeps as many bytes in flight as it has stages, without the
// registers that the same bytes would take as loads (sm_90 and later).
#pragma once

#include <cstdint>

namespace lowbit::cuda::detail {

__device__ __forceinline__ uint32_t shared_address(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// A barrier that `arrivals` arrivals complete (for a copy's: the thread that starts it, and the bytes).
__device__ __forceinline__ void barrier_init(uint64_t* barrier, uint32_t arrivals = 1) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(barrier)), "r"(arrivals));
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");  // visible to the copy engine
}

// Tells the barrier that its current phase also waits for `bytes` more bytes (the copies that follow),
// and counts the thread's arrival.
__device__ __forceinline__ void barrier_expect_bytes(uint64_t* barrier, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(barrier)), "r"(bytes) : "memory");
}

// Starts copying `bytes` (a multiple of 16; both addresses 16-byte aligned) to `to`; they count
// against `barrier`'s expected bytes when they land.
__device__ __forceinline__ void bulk_copy_to_shared(void* to, const void* from, uint32_t bytes, uint64_t* barrier) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(shared_address(to)),
               "l"(from), "r"(bytes), "r"(shared_address(barrier))
               : "memory");
}

// Counts one arrival (releasing the thread's earlier reads of what the barrier guards).
__device__ __forceinline__ void barrier_arrive(uint64_t* barrier) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(shared_address(barrier)) : "memory");
}

// Waits until the barrier's phase of parity `phase` has completed.
__device__ __forceinline__ void barrier_wait(uint64_t* barrier, uint32_t phase) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait;\n"
      "}\n" ::"r"(shared_address(barrier)),
      "r"(phase)
      : "memory");
}

}  // namespace lowbit::cuda::detail
