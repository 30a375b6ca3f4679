// simdev runtime: memory, device guard, streams/events, generator, hooks and the
// operator fallback of a simulated accelerator registered as PrivateUse1.
//
// Device memory is host memory the host cannot touch: each allocation is its own
// mmap region kept PROT_NONE, except while one of this backend's kernels runs on
// it (Access below). A host-pointer shortcut (reading data_ptr() directly) faults.
//
// Kernels: every operator without a native registration here goes through
// `fallback`, which opens the device storages it is given, runs the CPU kernel on
// CPU tensors aliasing that memory, maps the results back to device tensors and
// closes the storages again.

#include "simdev.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/EmptyTensor.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/GeneratorForPrivateuseone.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/Resize.h>
#include <ATen/native/transformers/attention.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/copy_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace simdev {

using c10::DeviceIndex;
using c10::CachingDeviceAllocator::DeviceStats;
constexpr auto kDev = c10::DeviceType::PrivateUse1;

// ---------------------------------------------------------------- configuration

namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    return fallback;
  }
  char* end = nullptr;
  double x = std::strtod(v, &end);
  std::string suffix(end);
  int64_t scale = 1;
  if (suffix == "K" || suffix == "KiB") scale = 1LL << 10;
  else if (suffix == "M" || suffix == "MiB") scale = 1LL << 20;
  else if (suffix == "G" || suffix == "GiB") scale = 1LL << 30;
  else TORCH_CHECK(suffix.empty(), name, "=", v, ": expected a number with an optional K/M/G suffix");
  return static_cast<int64_t>(x * static_cast<double>(scale));
}

thread_local DeviceIndex tls_device = 0;

}  // namespace

DeviceIndex device_count() {
  static const DeviceIndex n = [] {
    int64_t c = env_int("RLPORT_SIMDEV_DEVICES", 2);
    TORCH_CHECK(c >= 1 && c <= 64, "RLPORT_SIMDEV_DEVICES must be in 1..64");
    return static_cast<DeviceIndex>(c);
  }();
  return n;
}

size_t capacity() {
  static const size_t c = static_cast<size_t>(env_int("RLPORT_SIMDEV_MEMORY", 8LL << 30));
  return c;
}

DeviceIndex current_device() {
  return tls_device;
}

static void check_index(DeviceIndex index) {
  TORCH_CHECK(index >= 0 && index < device_count(), "simdev: invalid device index ", static_cast<int>(index),
              " (there are ", static_cast<int>(device_count()), " devices)");
}

void set_device(DeviceIndex index) {
  check_index(index);
  tls_device = index;
}

// ---------------------------------------------------------------- memory

namespace {

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE));

struct Block {
  void* ptr;
  size_t size;  // mapped bytes (page multiple)
  DeviceIndex device;
  int open = 0;        // kernels currently accessing it; PROT_NONE when 0
  bool freed = false;  // freed while open: goes back to the cache when closed
};

std::mutex g_mu;  // guards everything below

struct DeviceState {
  DeviceStats stats;
  size_t reserved = 0;
  std::multimap<size_t, Block*> cache;  // freed blocks kept mapped, by size
};

std::vector<DeviceState>& states() {
  static std::vector<DeviceState> s(device_count());
  return s;
}

std::map<uintptr_t, Block*> g_live;  // every mapped block, by address

void stat_add(c10::CachingAllocator::StatArray& a, int64_t amount) {
  for (auto& s : a) {
    if (amount >= 0) s.increase(amount);
    else s.decrease(-amount);
  }
}

void set_protection(Block* b, int prot) {
  if (mprotect(b->ptr, b->size, prot) != 0) {
    TORCH_WARN("simdev: mprotect failed: ", std::strerror(errno));
  }
}

void unmap_cached_locked(DeviceState& st) {
  for (auto& kv : st.cache) {
    Block* b = kv.second;
    g_live.erase(reinterpret_cast<uintptr_t>(b->ptr));
    munmap(b->ptr, b->size);
    st.reserved -= b->size;
    stat_add(st.stats.reserved_bytes, -static_cast<int64_t>(b->size));
    stat_add(st.stats.segment, -1);
    st.stats.num_device_free++;
    delete b;
  }
  st.cache.clear();
}

void release_locked(Block* b) {
  auto& st = states()[b->device];
  stat_add(st.stats.allocated_bytes, -static_cast<int64_t>(b->size));
  stat_add(st.stats.active_bytes, -static_cast<int64_t>(b->size));
  stat_add(st.stats.allocation, -1);
  stat_add(st.stats.active, -1);
  if (b->open > 0) {
    b->freed = true;  // Access::close puts it back
    return;
  }
  st.cache.emplace(b->size, b);
}

void free_block(void* ctx) {
  std::lock_guard<std::mutex> lock(g_mu);
  release_locked(static_cast<Block*>(ctx));
}

Block* block_of(const c10::DataPtr& p) {
  if (p.get() == nullptr || p.get_deleter() != &free_block) return nullptr;
  return static_cast<Block*>(p.get_context());
}

Block* block_containing(const void* addr) {
  auto it = g_live.upper_bound(reinterpret_cast<uintptr_t>(addr));
  if (it == g_live.begin()) return nullptr;
  --it;
  Block* b = it->second;
  auto a = reinterpret_cast<uintptr_t>(addr);
  return a < it->first + b->size ? b : nullptr;
}

void open_block(Block* b) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (b->open++ == 0) set_protection(b, PROT_READ | PROT_WRITE);
}

void close_block(Block* b) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (--b->open == 0) {
    set_protection(b, PROT_NONE);
    if (b->freed) {
      b->freed = false;
      states()[b->device].cache.emplace(b->size, b);
    }
  }
}

// Opens device storages for the duration of one kernel.
class Access {
 public:
  Access() = default;
  Access(const Access&) = delete;
  Access& operator=(const Access&) = delete;
  ~Access() {
    for (Block* b : blocks_) close_block(b);
  }
  void add(const c10::Storage& s) {
    if (!s) return;
    Block* b = block_of(s.data_ptr());
    if (b == nullptr || !seen_.insert(b).second) return;
    open_block(b);
    blocks_.push_back(b);
  }
  void add(const at::Tensor& t) {
    if (t.defined() && t.device().type() == kDev && t.has_storage()) add(t.storage());
  }

 private:
  std::vector<Block*> blocks_;
  std::unordered_set<Block*> seen_;
};

class SimAllocator final : public c10::DeviceAllocator {
 public:
  c10::DataPtr allocate(size_t nbytes) override {
    DeviceIndex dev = current_device();
    c10::Device device(kDev, dev);
    if (nbytes == 0) return {nullptr, nullptr, &free_block, device};
    size_t size = (nbytes + kPage - 1) / kPage * kPage;
    std::lock_guard<std::mutex> lock(g_mu);
    auto& st = states()[dev];
    Block* b = nullptr;
    auto it = st.cache.find(size);
    if (it != st.cache.end()) {
      b = it->second;
      st.cache.erase(it);
    } else {
      if (st.reserved + size > capacity()) unmap_cached_locked(st);
      if (st.reserved + size > capacity()) {
        st.stats.num_ooms++;
        TORCH_CHECK_WITH(OutOfMemoryError, false, "simdev out of memory: tried to allocate ", nbytes,
                         " bytes on simdev:", static_cast<int>(dev), " (capacity ", capacity(), " bytes, ",
                         st.reserved, " reserved)");
      }
      void* p = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      TORCH_CHECK_WITH(OutOfMemoryError, p != MAP_FAILED, "simdev: mmap of ", size, " bytes failed: ",
                       std::strerror(errno));
      b = new Block{p, size, dev};
      g_live[reinterpret_cast<uintptr_t>(p)] = b;
      st.reserved += size;
      stat_add(st.stats.reserved_bytes, static_cast<int64_t>(size));
      stat_add(st.stats.segment, 1);
      st.stats.num_device_alloc++;
    }
    stat_add(st.stats.allocated_bytes, static_cast<int64_t>(size));
    stat_add(st.stats.active_bytes, static_cast<int64_t>(size));
    stat_add(st.stats.requested_bytes, static_cast<int64_t>(nbytes));
    stat_add(st.stats.allocation, 1);
    stat_add(st.stats.active, 1);
    return {b->ptr, b, &free_block, device};
  }

  c10::DeleterFnPtr raw_deleter() const override {
    return nullptr;
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    Block* d = nullptr;
    Block* s = nullptr;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      d = block_containing(dest);
      s = block_containing(src);
    }
    if (d) open_block(d);
    if (s && s != d) open_block(s);
    std::memcpy(dest, src, count);
    if (s && s != d) close_block(s);
    if (d) close_block(d);
  }

  bool initialized() override {
    return true;
  }
  void emptyCache(c10::MempoolId_t /*unused*/) override {
    empty_cache();
  }
  void recordStream(const c10::DataPtr& /*unused*/, c10::Stream /*unused*/) override {}
  DeviceStats getDeviceStats(DeviceIndex index) override {
    return device_stats(index);
  }
  void resetAccumulatedStats(DeviceIndex index) override {
    reset_accumulated_stats(index);
  }
  void resetPeakStats(DeviceIndex index) override {
    reset_peak_stats(index);
  }
  std::pair<size_t, size_t> getMemoryInfo(DeviceIndex index) override {
    return mem_info(index);
  }
};

SimAllocator g_allocator;

}  // namespace

REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, &g_allocator)

DeviceStats device_stats(DeviceIndex index) {
  check_index(index);
  std::lock_guard<std::mutex> lock(g_mu);
  return states()[index].stats;
}

// Applies fn to every statistic (all pools) of a device's byte and count arrays.
template <typename Fn>
static void for_each_stat(DeviceStats& s, Fn fn) {
  for (auto* a : {&s.allocation, &s.segment, &s.active, &s.allocated_bytes, &s.reserved_bytes, &s.active_bytes,
                  &s.requested_bytes}) {
    for (auto& x : *a) fn(x);
  }
}

void reset_peak_stats(DeviceIndex index) {
  check_index(index);
  std::lock_guard<std::mutex> lock(g_mu);
  for_each_stat(states()[index].stats, [](c10::CachingAllocator::Stat& x) { x.reset_peak(); });
}

void reset_accumulated_stats(DeviceIndex index) {
  check_index(index);
  std::lock_guard<std::mutex> lock(g_mu);
  auto& s = states()[index].stats;
  for_each_stat(s, [](c10::CachingAllocator::Stat& x) { x.reset_accumulated(); });
  s.num_ooms = 0;
  s.num_device_alloc = 0;
  s.num_device_free = 0;
}

void empty_cache() {
  std::lock_guard<std::mutex> lock(g_mu);
  for (auto& st : states()) unmap_cached_locked(st);
}

std::pair<size_t, size_t> mem_info(DeviceIndex index) {
  check_index(index);
  std::lock_guard<std::mutex> lock(g_mu);
  size_t used = states()[index].reserved;
  return {used >= capacity() ? 0 : capacity() - used, capacity()};
}

bool is_protected(const at::Tensor& tensor) {
  TORCH_CHECK(tensor.device().type() == kDev, "is_protected: not a simdev tensor");
  std::lock_guard<std::mutex> lock(g_mu);
  Block* b = block_of(tensor.storage().data_ptr());
  return b != nullptr && b->open == 0;
}

int64_t live_blocks() {
  std::lock_guard<std::mutex> lock(g_mu);
  return static_cast<int64_t>(g_live.size());
}

// Grows or shrinks a device storage in place (new memory, old bytes copied).
static void resize_storage_bytes(c10::StorageImpl* storage, size_t nbytes) {
  TORCH_CHECK(storage->resizable(), "Trying to resize storage that is not resizable");
  const size_t old = storage->nbytes();
  c10::DeviceGuard guard(storage->device());
  c10::DataPtr fresh = g_allocator.allocate(nbytes);
  size_t n = std::min(old, nbytes);
  if (n > 0) g_allocator.copy_data(fresh.get(), storage->data(), n);
  storage->set_data_ptr_noswap(std::move(fresh));
  storage->set_nbytes(nbytes);
}

// ---------------------------------------------------------------- streams, events, guard

namespace {

struct EventRecord {
  std::chrono::steady_clock::time_point when;
  bool recorded = false;
};

std::atomic<c10::StreamId> g_next_stream{1};
thread_local std::unordered_map<DeviceIndex, c10::StreamId> tls_stream;

struct GuardImpl final : public c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override {
    return kDev;
  }
  c10::Device exchangeDevice(c10::Device d) const override {
    c10::Device old = getDevice();
    if (d.index() != old.index()) setDevice(d);
    return old;
  }
  c10::Device getDevice() const override {
    return c10::Device(kDev, current_device());
  }
  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kDev, "simdev guard got device ", d);
    if (d.index() >= 0) set_device(d.index());
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.index() >= 0 && d.index() < device_count()) tls_device = d.index();
  }
  c10::Stream getStream(c10::Device d) const override {
    DeviceIndex i = d.index() < 0 ? current_device() : d.index();
    auto it = tls_stream.find(i);
    return c10::Stream(c10::Stream::UNSAFE, {kDev, i}, it == tls_stream.end() ? 0 : it->second);
  }
  c10::Stream getDefaultStream(c10::Device d) const override {
    return c10::Stream(c10::Stream::UNSAFE, {kDev, d.index() < 0 ? current_device() : d.index()}, 0);
  }
  c10::Stream getStreamFromGlobalPool(c10::Device d, bool /*high_priority*/) const override {
    return getNewStream(d, 0);
  }
  c10::Stream getNewStream(c10::Device d, int /*priority*/) const override {
    return c10::Stream(c10::Stream::UNSAFE, {kDev, d.index() < 0 ? current_device() : d.index()}, g_next_stream++);
  }
  c10::Stream exchangeStream(c10::Stream s) const override {
    c10::Stream old = getStream(s.device());
    tls_stream[s.device_index()] = s.id();
    return old;
  }
  DeviceIndex deviceCount() const noexcept override {
    return device_count();
  }
  // Kernels run synchronously, so every stream and event is complete as soon as it
  // is queried; events still record a time so elapsed_time works.
  void record(void** event, const c10::Stream& /*stream*/, const DeviceIndex /*device_index*/,
              const c10::EventFlag /*flag*/) const override {
    if (*event == nullptr) *event = new EventRecord();
    auto* e = static_cast<EventRecord*>(*event);
    e->when = std::chrono::steady_clock::now();
    e->recorded = true;
  }
  void block(void* /*event*/, const c10::Stream& /*stream*/) const override {}
  bool queryEvent(void* /*event*/) const override {
    return true;
  }
  void destroyEvent(void* event, const DeviceIndex /*device_index*/) const noexcept override {
    delete static_cast<EventRecord*>(event);
  }
  bool queryStream(const c10::Stream& /*stream*/) const override {
    return true;
  }
  void synchronizeStream(const c10::Stream& /*stream*/) const override {}
  void synchronizeEvent(void* /*event*/) const override {}
  void synchronizeDevice(const DeviceIndex /*device_index*/) const override {}
  void recordDataPtrOnStream(const c10::DataPtr& /*unused*/, const c10::Stream& /*unused*/) const override {}
  double elapsedTime(void* event1, void* event2, const DeviceIndex /*device_index*/) const override {
    auto* a = static_cast<EventRecord*>(event1);
    auto* b = static_cast<EventRecord*>(event2);
    TORCH_CHECK(a && b && a->recorded && b->recorded, "elapsed_time: both events must be recorded first");
    return std::chrono::duration<double, std::milli>(b->when - a->when).count();
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, GuardImpl);

// ---------------------------------------------------------------- generator

// A device generator whose state is a CPU (Philox-free, mt19937) generator: the CPU
// kernels the fallback runs draw from that inner generator.
struct SimGenerator final : public c10::GeneratorImpl {
  explicit SimGenerator(DeviceIndex index)
      : c10::GeneratorImpl(c10::Device(kDev, index), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1)),
        cpu(at::make_generator<at::CPUGeneratorImpl>(c10::default_rng_seed_val)) {}
  void set_current_seed(uint64_t seed) override {
    cpu.set_current_seed(seed);
  }
  void set_offset(uint64_t offset) override {
    cpu.set_offset(offset);
  }
  uint64_t get_offset() const override {
    return cpu.get_offset();
  }
  uint64_t current_seed() const override {
    return cpu.current_seed();
  }
  uint64_t seed() override {
    return cpu.seed();
  }
  void set_state(const c10::TensorImpl& new_state) override {
    cpu.unsafeGetGeneratorImpl()->set_state(new_state);
  }
  c10::intrusive_ptr<c10::TensorImpl> get_state() const override {
    return cpu.unsafeGetGeneratorImpl()->get_state();
  }
  SimGenerator* clone_impl() const override {
    auto* g = new SimGenerator(device().index());
    g->cpu = cpu.clone();
    return g;
  }
  at::Generator cpu;
};

at::Generator host_generator(const at::Generator& g) {
  if (!g.defined() || g.device().type() != kDev) return g;
  return static_cast<SimGenerator*>(g.unsafeGetGeneratorImpl())->cpu;
}

}  // namespace

const at::Generator& default_generator(DeviceIndex index) {
  static std::vector<at::Generator> gens = [] {
    std::vector<at::Generator> v;
    for (DeviceIndex i = 0; i < device_count(); ++i) v.push_back(at::make_generator<SimGenerator>(i));
    return v;
  }();
  DeviceIndex i = index < 0 ? current_device() : index;
  check_index(i);
  return gens[i];
}

// ---------------------------------------------------------------- pinned host memory, hooks

namespace {

std::mutex g_pinned_mu;
std::unordered_set<const void*> g_pinned;

void free_pinned(void* p) {
  {
    std::lock_guard<std::mutex> lock(g_pinned_mu);
    g_pinned.erase(p);
  }
  std::free(p);
}

struct PinnedAllocator final : public c10::Allocator {
  c10::DataPtr allocate(size_t nbytes) override {
    void* p = nullptr;
    if (nbytes > 0) {
      TORCH_CHECK(posix_memalign(&p, 64, nbytes) == 0, "simdev: pinned allocation failed");
      std::lock_guard<std::mutex> lock(g_pinned_mu);
      g_pinned.insert(p);
    }
    return {p, p, &free_pinned, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override {
    return &free_pinned;
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    std::memcpy(dest, src, count);
  }
};

PinnedAllocator g_pinned_allocator;

struct Hooks final : public at::PrivateUse1HooksInterface {
  bool isBuilt() const override {
    return true;
  }
  bool isAvailable() const override {
    return device_count() > 0;
  }
  bool hasPrimaryContext(DeviceIndex /*device_index*/) const override {
    return true;
  }
  void init() const override {}
  DeviceIndex deviceCount() const override {
    return device_count();
  }
  void setCurrentDevice(DeviceIndex device) const override {
    set_device(device);
  }
  DeviceIndex getCurrentDevice() const override {
    return current_device();
  }
  DeviceIndex exchangeDevice(DeviceIndex device) const override {
    DeviceIndex old = current_device();
    set_device(device);
    return old;
  }
  DeviceIndex maybeExchangeDevice(DeviceIndex device) const override {
    return exchangeDevice(device);
  }
  const at::Generator& getDefaultGenerator(DeviceIndex device_index) const override {
    return default_generator(device_index);
  }
  at::Generator getNewGenerator(DeviceIndex device_index) const override {
    return at::make_generator<SimGenerator>(device_index < 0 ? current_device() : device_index);
  }
  at::Device getDeviceFromPtr(void* data) const override {
    std::lock_guard<std::mutex> lock(g_mu);
    Block* b = block_containing(data);
    TORCH_CHECK(b != nullptr, "simdev: pointer is not device memory");
    return {kDev, b->device};
  }
  bool isPinnedPtr(const void* data) const override {
    std::lock_guard<std::mutex> lock(g_pinned_mu);
    return g_pinned.count(data) > 0;
  }
  at::Allocator* getPinnedMemoryAllocator() const override {
    return &g_pinned_allocator;
  }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const override {
    resize_storage_bytes(storage.unsafeGetStorageImpl(), newsize);
  }
};

struct RegisterHooks {
  RegisterHooks() {
    at::RegisterPrivateUse1HooksInterface(new Hooks());
  }
} g_register_hooks;

// ---------------------------------------------------------------- native kernels

// A CPU tensor over the same bytes as a device tensor (the storage must be open).
at::Tensor host_view(const at::Tensor& t, const c10::Storage& host_storage) {
  auto h = at::detail::make_tensor<c10::TensorImpl>(c10::Storage(host_storage),
                                                     c10::DispatchKeySet(c10::DispatchKey::CPU), t.dtype());
  h.unsafeGetTensorImpl()->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
  return h;
}

void no_delete(void* /*unused*/) {}

c10::Storage host_storage_of(const c10::Storage& s) {
  return c10::Storage(c10::Storage::use_byte_size_t(), s.nbytes(),
                      c10::DataPtr(s.mutable_data(), nullptr, &no_delete, c10::Device(c10::DeviceType::CPU)),
                      at::getCPUAllocator(), /*resizable=*/true);
}

at::Tensor host_alias(const at::Tensor& t) {
  return host_view(t, host_storage_of(t.storage()));
}

at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<c10::ScalarType> dtype,
                               std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                               std::optional<bool> pin_memory, std::optional<c10::MemoryFormat> memory_format) {
  auto dev = c10::device_or_default(device);
  TORCH_CHECK(dev.type() == kDev, "simdev empty: wrong device ", dev);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided, "simdev supports only strided tensors");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory), "only CPU tensors can be pinned");
  c10::DeviceGuard guard(dev);
  return at::detail::empty_generic(size, &g_allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                   c10::dtype_or_default(dtype), memory_format);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, std::optional<c10::ScalarType> dtype,
                         std::optional<c10::Layout> layout, std::optional<c10::Device> device,
                         std::optional<bool> pin_memory) {
  auto dev = c10::device_or_default(device);
  TORCH_CHECK(dev.type() == kDev, "simdev empty_strided: wrong device ", dev);
  TORCH_CHECK(c10::layout_or_default(layout) == c10::Layout::Strided, "simdev supports only strided tensors");
  TORCH_CHECK(!c10::pinned_memory_or_default(pin_memory), "only CPU tensors can be pinned");
  c10::DeviceGuard guard(dev);
  return at::detail::empty_strided_generic(size, stride, &g_allocator,
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           c10::dtype_or_default(dtype));
}

at::Tensor as_strided(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride,
                      std::optional<c10::SymInt> offset) {
  std::optional<int64_t> off;
  if (offset) off = offset->expect_int();
  return at::native::as_strided_tensorimpl(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride),
                                           off);
}

at::Tensor view(const at::Tensor& self, c10::SymIntArrayRef size) {
  return at::native::view(self, C10_AS_INTARRAYREF_SLOW(size));
}

at::Tensor reshape_alias(const at::Tensor& self, c10::SymIntArrayRef size, c10::SymIntArrayRef stride) {
  return at::native::_reshape_alias(self, C10_AS_INTARRAYREF_SLOW(size), C10_AS_INTARRAYREF_SLOW(stride));
}

// Makes sure `self`'s storage holds its geometry, growing it (never shrinking) as CPU does.
void ensure_storage(const at::Tensor& self) {
  size_t need = 0;
  if (self.numel() > 0) {
    need = at::detail::computeStorageNbytes(self.sizes(), self.strides(), self.dtype().itemsize(),
                                            self.storage_offset());
  }
  auto* storage = self.storage().unsafeGetStorageImpl();
  if (need > storage->nbytes()) resize_storage_bytes(storage, need);
}

const at::Tensor& resize_(const at::Tensor& self, c10::SymIntArrayRef size,
                          std::optional<c10::MemoryFormat> memory_format) {
  auto* impl = self.unsafeGetTensorImpl();
  impl->set_sizes_contiguous(C10_AS_INTARRAYREF_SLOW(size));
  if (memory_format.has_value() && *memory_format != c10::MemoryFormat::Preserve) {
    impl->empty_tensor_restride(*memory_format);
  }
  ensure_storage(self);
  return self;
}

at::Tensor& set_storage_offset(at::Tensor& self, at::Storage source, int64_t offset, c10::IntArrayRef size,
                               c10::IntArrayRef stride) {
  TORCH_CHECK(!source || source.device().type() == kDev, "set_: storage is on ", source.device(),
              ", tensor on simdev");
  auto* impl = self.unsafeGetTensorImpl();
  impl->set_storage_keep_dtype(std::move(source));
  impl->set_sizes_and_strides(size, stride, offset);
  ensure_storage(self);
  return self;
}

at::Tensor& set_storage(at::Tensor& self, at::Storage source) {
  int64_t n = static_cast<int64_t>(source.nbytes() / self.dtype().itemsize());
  return set_storage_offset(self, std::move(source), 0, {n}, {1});
}

at::Tensor& set_tensor(at::Tensor& self, const at::Tensor& source) {
  if (self.unsafeGetTensorImpl() == source.unsafeGetTensorImpl()) return self;
  return set_storage_offset(self, source.storage(), source.storage_offset(), source.sizes(), source.strides());
}

at::Tensor& set_empty(at::Tensor& self) {
  c10::DeviceGuard guard(self.device());
  c10::Storage s(c10::Storage::use_byte_size_t(), 0, &g_allocator, /*resizable=*/true);
  return set_storage_offset(self, std::move(s), 0, {0}, {});
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  Access access;
  access.add(self);
  access.add(dst);
  at::Tensor src = self.device().type() == kDev ? host_alias(self) : self;
  at::Tensor out = dst.device().type() == kDev ? host_alias(dst) : dst;
  at::native::copy_(out, src, non_blocking);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  if (dst.device().type() == kDev) {
    resize_(dst, self.sym_sizes(), std::nullopt);
  } else {
    dst.resize_(self.sizes());
  }
  return copy_from(self, dst, false);
}

c10::Scalar local_scalar_dense(const at::Tensor& self) {
  Access access;
  access.add(self);
  return host_alias(self).item();
}

void record_stream(at::Tensor& /*self*/, c10::Stream /*stream*/) {}

// ---------------------------------------------------------------- fallback

// Operators a real accelerator accepts with host (CPU) index tensors.
bool accepts_host_tensors(const c10::OperatorName& name) {
  static const std::unordered_set<std::string> ops = {"aten::index", "aten::index_put_", "aten::_index_put_impl_",
                                                      "aten::index_put"};
  return ops.count(name.name) > 0;
}

struct Mapping {
  std::unordered_map<c10::StorageImpl*, c10::Storage> host_of;    // device storage -> host alias storage
  std::unordered_map<c10::StorageImpl*, c10::Storage> device_of;  // host alias storage -> device storage
  std::vector<std::pair<at::Tensor, at::Tensor>> args;            // (device tensor, host alias) of arguments
};

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const auto& arguments = schema.arguments();
  const size_t nargs = arguments.size();
  const size_t first = stack->size() - nargs;

  Access access;
  Mapping map;
  std::optional<c10::Device> target;
  const bool host_ok = accepts_host_tensors(schema.operator_name());

  // Pass 1: the device of the op, and no tensor from another device.
  auto note = [&](const at::Tensor& t) {
    if (!t.defined()) return;
    if (t.device().type() == kDev) {
      TORCH_CHECK(!target || *target == t.device(), schema.operator_name(),
                  ": expected all tensors to be on the same device, found ", *target, " and ", t.device());
      target = t.device();
    }
  };
  for (size_t i = 0; i < nargs; ++i) {
    const c10::IValue& v = (*stack)[first + i];
    if (v.isTensor()) note(v.toTensor());
    else if (v.isTensorList()) for (const at::Tensor& t : v.toTensorVector()) note(t);
    else if (v.isList()) {
      for (const c10::IValue& e : v.toListRef()) if (e.isTensor()) note(e.toTensor());
    }
  }
  auto check_host = [&](const at::Tensor& t) {
    TORCH_CHECK(!target || host_ok || t.dim() == 0, schema.operator_name(),
                ": expected all tensors to be on the same device, found ", *target,
                " and cpu (a host tensor given to a simdev operator)");
  };

  auto to_host = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined()) return t;
    if (t.device().type() != kDev) {
      if (t.device().type() == c10::DeviceType::CPU) check_host(t);
      return t;
    }
    auto* impl = t.storage().unsafeGetStorageImpl();
    auto it = map.host_of.find(impl);
    if (it == map.host_of.end()) {
      access.add(t.storage());
      c10::Storage hs = host_storage_of(t.storage());
      map.device_of.emplace(hs.unsafeGetStorageImpl(), t.storage());
      it = map.host_of.emplace(impl, std::move(hs)).first;
    }
    at::Tensor h = host_view(t, it->second);
    map.args.emplace_back(t, h);
    return h;
  };

  for (size_t i = 0; i < nargs; ++i) {
    c10::IValue& v = (*stack)[first + i];
    if (v.isTensor()) {
      v = to_host(v.toTensor());
    } else if (v.isTensorList()) {
      auto list = v.toTensorList();
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : list) out.push_back(to_host(t));
      v = out;
    } else if (v.isList() && v.toListRef().size() > 0) {
      // Tensor?[] (e.g. the indices of index.Tensor)
      auto list = v.toList();
      bool tensors = false;
      for (const c10::IValue& e : list) tensors = tensors || e.isTensor();
      if (tensors) {
        c10::List<std::optional<at::Tensor>> out;
        for (const c10::IValue& e : list) {
          out.push_back(e.isTensor() ? std::optional<at::Tensor>(to_host(e.toTensor())) : std::nullopt);
        }
        v = out;
      }
    } else if (v.isDevice() && v.toDevice().type() == kDev) {
      if (!target) target = v.toDevice();
      v = c10::Device(c10::DeviceType::CPU);
    } else if (v.isGenerator()) {
      v = host_generator(v.toGenerator());
    }
  }
  if (!target) target = c10::Device(kDev, current_device());
  if (target->index() < 0) target = c10::Device(kDev, current_device());
  // A missing generator means the device's default generator, not the CPU's.
  for (size_t i = 0; i < nargs; ++i) {
    c10::IValue& v = (*stack)[first + i];
    if (v.isNone() && arguments[i].type()->kind() == c10::TypeKind::OptionalType &&
        arguments[i].type()->castRaw<c10::OptionalType>()->getElementType()->kind() == c10::TypeKind::GeneratorType) {
      v = host_generator(default_generator(target->index()));
    }
  }

  {
    c10::DeviceGuard guard(*target);
    op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
  }

  // Arguments the kernel changed: a resized out= tensor may now live in CPU memory,
  // which goes back into (new) device memory here.
  std::unordered_set<c10::StorageImpl*> synced;
  for (auto& [dev, host] : map.args) {
    auto* himpl = host.storage().unsafeGetStorageImpl();
    auto* dstorage = dev.storage().unsafeGetStorageImpl();
    if (himpl->data() != dstorage->data() && synced.insert(dstorage).second) {
      c10::DeviceGuard guard(dev.device());
      c10::DataPtr fresh = g_allocator.allocate(himpl->nbytes());
      if (himpl->nbytes() > 0) {
        Block* b = block_of(fresh);
        open_block(b);
        std::memcpy(fresh.get(), himpl->data(), himpl->nbytes());
        close_block(b);
      }
      dstorage->set_data_ptr_noswap(std::move(fresh));
      dstorage->set_nbytes(himpl->nbytes());
    }
    if (host.sizes() != dev.sizes() || host.strides() != dev.strides() ||
        host.storage_offset() != dev.storage_offset()) {
      dev.unsafeGetTensorImpl()->set_sizes_and_strides(host.sizes(), host.strides(), host.storage_offset());
    }
  }

  std::unordered_map<c10::StorageImpl*, c10::Storage> fresh_storages;
  auto to_device = [&](const at::Tensor& h) -> at::Tensor {
    if (!h.defined() || h.device().type() != c10::DeviceType::CPU) return h;
    for (auto& [dev, host] : map.args) {
      if (host.unsafeGetTensorImpl() == h.unsafeGetTensorImpl()) return dev;
    }
    auto* himpl = h.storage().unsafeGetStorageImpl();
    c10::Storage ds;
    auto it = map.device_of.find(himpl);
    if (it != map.device_of.end()) {
      ds = it->second;  // a view of an argument
    } else {
      auto f = fresh_storages.find(himpl);
      if (f == fresh_storages.end()) {
        c10::DeviceGuard guard(*target);
        c10::Storage s(c10::Storage::use_byte_size_t(), himpl->nbytes(), &g_allocator, /*resizable=*/true);
        if (himpl->nbytes() > 0) {
          Block* b = block_of(s.data_ptr());
          open_block(b);
          std::memcpy(s.mutable_data(), himpl->data(), himpl->nbytes());
          close_block(b);
        }
        f = fresh_storages.emplace(himpl, std::move(s)).first;
      }
      ds = f->second;
    }
    auto d = at::detail::make_tensor<c10::TensorImpl>(std::move(ds), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                                       h.dtype());
    d.unsafeGetTensorImpl()->set_sizes_and_strides(h.sizes(), h.strides(), h.storage_offset());
    return d;
  };

  const size_t nret = schema.returns().size();
  const size_t rfirst = stack->size() - nret;
  for (size_t i = 0; i < nret; ++i) {
    c10::IValue& v = (*stack)[rfirst + i];
    if (v.isTensor()) {
      v = to_device(v.toTensor());
    } else if (v.isTensorList()) {
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : v.toTensorList()) out.push_back(to_device(t));
      v = out;
    }
  }
}

// scaled_dot_product_attention asks a per-device stub which kernel to use and takes the math
// decomposition where a device registered none. The device runs the host's kernels, so it takes the
// host's choice (judged on metadata: the aliases are never read here), and its results equal the host's.
int64_t sdp_choice(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& mask,
                   double dropout_p, bool is_causal, std::optional<double> scale, bool enable_gqa) {
  std::optional<at::Tensor> host_mask;
  if (mask && mask->defined()) host_mask = mask->device().type() == kDev ? host_alias(*mask) : *mask;
  return at::_fused_sdp_choice(host_alias(q), host_alias(k), host_alias(v), host_mask, dropout_p, is_causal, scale,
                               enable_gqa);
}

}  // namespace

}  // namespace simdev

namespace at::native {
REGISTER_PRIVATEUSE1_DISPATCH(_fused_sdp_choice_stub, &simdev::sdp_choice)
}  // namespace at::native

namespace simdev {

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", empty_memory_format);
  m.impl("empty_strided", empty_strided);
  m.impl("as_strided", as_strided);
  m.impl("view", view);
  m.impl("_reshape_alias", reshape_alias);
  m.impl("resize_", resize_);
  m.impl("set_.source_Storage_storage_offset", set_storage_offset);
  m.impl("set_.source_Storage", set_storage);
  m.impl("set_.source_Tensor", set_tensor);
  m.impl("set_", set_empty);
  m.impl("_copy_from", copy_from);
  m.impl("_copy_from_and_resize", copy_from_and_resize);
  m.impl("_local_scalar_dense", local_scalar_dense);
  m.impl("record_stream", record_stream);
  // Operators with a CPU kernel and a math decomposition for every other backend: the device takes
  // the CPU kernel, so that its results equal the host's bit for bit.
  for (const char* name : {"silu_backward"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&fallback>());
  }
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

// torch.autocast("simdev"): matrix products in the autocast dtype, everything else unchanged.
TORCH_LIBRARY_IMPL(_, AutocastPrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, AutocastPrivateUse1, m) {
  KERNEL_PRIVATEUSEONE(mm, lower_precision_fp)
  KERNEL_PRIVATEUSEONE(bmm, lower_precision_fp)
  KERNEL_PRIVATEUSEONE(addmm, lower_precision_fp)
  KERNEL_PRIVATEUSEONE(baddbmm, lower_precision_fp)
  KERNEL_PRIVATEUSEONE(matmul, lower_precision_fp)
  KERNEL_PRIVATEUSEONE(linear, lower_precision_fp)
}

}  // namespace simdev
