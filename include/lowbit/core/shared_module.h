// Opening one of lowbit's optional modules (shared libraries built beside the executable, such as
// liblowbit_cuda.so) at run time, so that what they link is loaded only when it is needed.
#pragma once

#include <string>

namespace lowbit {

// Looks for `library` beside the running executable, then in ../lib beside it, then beside the shared
// object holding lowbit (a Python extension), then on the dynamic linker's usual path, and returns its
// symbol `entry`; nullptr with the reason in `why_not` when the module or the symbol is missing. A
// module stays loaded for the life of the process.
void* open_module_entry(const std::string& library, const std::string& entry, std::string& why_not);

}  // namespace lowbit
