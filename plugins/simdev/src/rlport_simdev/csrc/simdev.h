// simdev: a simulated accelerator registered as PyTorch's PrivateUse1 backend.
// Shared declarations between the runtime (runtime.cpp) and the Python bindings (bindings.cpp).
#pragma once

#include <ATen/ATen.h>
#include <c10/core/CachingDeviceAllocator.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace simdev {

// Number of simulated devices (RLPORT_SIMDEV_DEVICES, default 2), read once.
c10::DeviceIndex device_count();
c10::DeviceIndex current_device();
void set_device(c10::DeviceIndex index);
// Simulated capacity of each device in bytes (RLPORT_SIMDEV_MEMORY, default 8 GiB).
size_t capacity();

// Allocator statistics and control (per device).
c10::CachingDeviceAllocator::DeviceStats device_stats(c10::DeviceIndex index);
void reset_peak_stats(c10::DeviceIndex index);
void reset_accumulated_stats(c10::DeviceIndex index);
void empty_cache();
std::pair<size_t, size_t> mem_info(c10::DeviceIndex index);  // (free, total)

// True when the memory behind this device tensor's storage is currently inaccessible
// to the host (PROT_NONE), which is its state outside the backend's own kernels.
bool is_protected(const at::Tensor& tensor);
// How many live device allocations (mmap regions) there are, on all devices.
int64_t live_blocks();

const at::Generator& default_generator(c10::DeviceIndex index);

}  // namespace simdev
