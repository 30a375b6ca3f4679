// Python bindings of the simdev runtime (module rlport_simdev._C, built by _build.py).
#include "simdev.h"

#include <torch/csrc/utils/pybind.h>

namespace py = pybind11;

namespace {

py::dict stats_dict(c10::DeviceIndex index) {
  auto s = simdev::device_stats(index);
  py::dict d;
  auto put = [&](const char* name, const c10::CachingAllocator::StatArray& a) {
    const auto& x = a[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)];
    for (auto [key, value] : {std::pair<const char*, int64_t>{"current", x.current},
                              {"peak", x.peak},
                              {"allocated", x.allocated},
                              {"freed", x.freed}}) {
      d[py::str(std::string(name) + ".all." + key)] = value;
    }
  };
  put("allocation", s.allocation);
  put("segment", s.segment);
  put("active", s.active);
  put("allocated_bytes", s.allocated_bytes);
  put("reserved_bytes", s.reserved_bytes);
  put("active_bytes", s.active_bytes);
  put("requested_bytes", s.requested_bytes);
  d["num_ooms"] = s.num_ooms;
  d["num_device_alloc"] = s.num_device_alloc;
  d["num_device_free"] = s.num_device_free;
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "simdev runtime: a simulated accelerator registered as PrivateUse1";
  m.def("device_count", [] { return static_cast<int>(simdev::device_count()); });
  m.def("current_device", [] { return static_cast<int>(simdev::current_device()); });
  m.def("set_device", [](int i) { simdev::set_device(static_cast<c10::DeviceIndex>(i)); });
  m.def("capacity", &simdev::capacity);
  m.def("memory_stats", [](int i) { return stats_dict(static_cast<c10::DeviceIndex>(i)); });
  m.def("reset_peak_stats", [](int i) { simdev::reset_peak_stats(static_cast<c10::DeviceIndex>(i)); });
  m.def("reset_accumulated_stats",
        [](int i) { simdev::reset_accumulated_stats(static_cast<c10::DeviceIndex>(i)); });
  m.def("empty_cache", &simdev::empty_cache);
  m.def("mem_get_info", [](int i) { return simdev::mem_info(static_cast<c10::DeviceIndex>(i)); });
  m.def("is_protected", &simdev::is_protected);
  m.def("live_blocks", &simdev::live_blocks);
  m.def("default_generator",
        [](int i) { return simdev::default_generator(static_cast<c10::DeviceIndex>(i)); });
}
