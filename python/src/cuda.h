// lowbit._lowbit.cuda: the CUDA kernels on torch CUDA tensors (cuda.cpp).
#pragma once

#include <nanobind/nanobind.h>

namespace lowbit::python {

void bind_cuda(nanobind::module_& m);

}  // namespace lowbit::python
