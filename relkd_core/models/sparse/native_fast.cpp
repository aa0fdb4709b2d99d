// Compiled kernels of the `native` sparse backend (CPU): a hashed neighbour table and a fused
// gather-GEMM-scatter submanifold convolution. Built on first use by native_fast.py with
// torch.utils.cpp_extension; the pure-PyTorch functions in native.py are the reference they
// are tested against, and run whenever this file cannot be built.
//
// Only light ATen headers are included (no torch/extension.h, no pybind11): the build then
// takes seconds instead of a minute. The ops take their outputs as arguments, so nothing here
// allocates tensors.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace {

// Open-addressing map of non-negative int64 keys to int64 values (linear probing). It doubles
// when half full, so its size follows the keys it holds (a few times fewer than the points of
// a scan, for voxels), and a slot holds its key and value side by side: a probe touches one
// cache line.
class KeyMap {
 public:
  explicit KeyMap(int64_t expected) { resize(expected); }

  // The value of ``key``; when absent, ``value`` is added for it and returned.
  int64_t find_or_add(int64_t key, int64_t value) {
    uint64_t slot = hash(key);
    while (slots_[slot].key != -1) {
      if (slots_[slot].key == key) return slots_[slot].value;
      slot = (slot + 1) & mask_;
    }
    slots_[slot] = Slot{key, value};
    if (++used_ * 2 > static_cast<int64_t>(mask_ + 1)) resize(used_);
    return value;
  }

  // The value of ``key``, or -1 when absent.
  int64_t find(int64_t key) const {
    if (key < 0) return -1;
    uint64_t slot = hash(key);
    while (slots_[slot].key != -1) {
      if (slots_[slot].key == key) return slots_[slot].value;
      slot = (slot + 1) & mask_;
    }
    return -1;
  }

 private:
  struct Slot {
    int64_t key;
    int64_t value;
  };
  uint64_t hash(int64_t key) const {
    return (static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull) >> shift_;
  }
  void resize(int64_t entries) {
    int bits = 4;
    while ((int64_t{1} << bits) < 2 * std::max<int64_t>(entries, 1)) ++bits;
    std::vector<Slot> old = std::move(slots_);
    shift_ = 64 - bits;
    mask_ = (uint64_t{1} << bits) - 1;
    slots_.assign(mask_ + 1, Slot{-1, -1});
    for (const Slot& entry : old) {
      if (entry.key == -1) continue;
      uint64_t slot = hash(entry.key);
      while (slots_[slot].key != -1) slot = (slot + 1) & mask_;
      slots_[slot] = entry;
    }
  }
  int shift_ = 0;
  uint64_t mask_ = 0;
  int64_t used_ = 0;
  std::vector<Slot> slots_;
};

// Distinct keys, each given an id in the order first seen; ``by_key`` then ranks them.
class DistinctKeys {
 public:
  explicit DistinctKeys(int64_t expected) : ids_(expected) { keys_.reserve(expected + 16); }

  // The id of ``key``; a key not seen before gets the next id.
  int32_t id(int64_t key) {
    const auto next = static_cast<int64_t>(keys_.size());
    const int64_t found = ids_.find_or_add(key, next);
    if (found == next) keys_.push_back(key);
    return static_cast<int32_t>(found);
  }

  int64_t size() const { return static_cast<int64_t>(keys_.size()); }
  int64_t key(int32_t id) const { return keys_[id]; }

  // The ids in ascending key order; rank[id] is written with each id's position in it. A
  // least-significant-digit radix sort (11-bit digits, as many passes as the keys' span
  // needs): the keys are distinct, so it gives the order a comparison sort gives, in a few
  // times less time on a scan's voxels.
  std::vector<int32_t> by_key(std::vector<int32_t>& rank) const {
    const size_t count = keys_.size();
    std::vector<int32_t> order(count), scratch(count);
    for (size_t i = 0; i < count; ++i) order[i] = static_cast<int32_t>(i);
    if (count > 1) {
      const auto [lowest, highest] = std::minmax_element(keys_.begin(), keys_.end());
      const int64_t low = *lowest;
      const auto span = static_cast<uint64_t>(*highest - low);
      const int bits = 64 - __builtin_clzll(span | 1);
      constexpr int kDigit = 11;
      constexpr uint64_t kMask = (uint64_t{1} << kDigit) - 1;
      std::vector<int64_t> start(kMask + 1);
      for (int shift = 0; shift < bits; shift += kDigit) {
        const auto digit = [&](int32_t id) {
          return (static_cast<uint64_t>(keys_[id] - low) >> shift) & kMask;
        };
        std::fill(start.begin(), start.end(), 0);
        for (const int32_t id : order) ++start[digit(id)];
        int64_t total = 0;
        for (int64_t& bucket : start) total += std::exchange(bucket, total);
        for (const int32_t id : order) scratch[start[digit(id)]++] = id;
        order.swap(scratch);
      }
    }
    rank.assign(count, 0);
    for (size_t i = 0; i < count; ++i) rank[order[i]] = static_cast<int32_t>(i);
    return order;
  }

 private:
  KeyMap ids_;
  std::vector<int64_t> keys_;
};

// A KeyMap of keys[row] -> row.
KeyMap rows_of(const int64_t* keys, int64_t count) {
  KeyMap map(count);
  for (int64_t row = 0; row < count; ++row) map.find_or_add(keys[row], row);
  return map;
}

// Whether deltas[volume-1-k] == -deltas[k] for every k (a centred kernel: true for the odd
// cubes of the backend), so that half the offsets give the other half for free.
bool mirrored(const int64_t* delta, int64_t volume) {
  for (int64_t k = 0; k < volume; ++k) {
    if (delta[volume - 1 - k] != -delta[k]) return false;
  }
  return true;
}

// table[row, k] = the row whose key is keys[row] + deltas[k], or -1.
//
// For a mirrored kernel only the offsets k < volume/2 are looked up: when row o finds row i at
// offset k, row i has row o at offset volume-1-k, and that entry is written then. Every entry
// is written by exactly one row (keys are unique), so the threads never write the same entry.
void neighbor_table(const at::Tensor& keys, const at::Tensor& deltas, const at::Tensor& table) {
  TORCH_CHECK(keys.device().is_cpu() && keys.scalar_type() == at::kLong && keys.is_contiguous(),
              "keys must be contiguous int64 on CPU");
  TORCH_CHECK(deltas.scalar_type() == at::kLong && deltas.is_contiguous(), "deltas: int64");
  TORCH_CHECK(keys.numel() < (int64_t{1} << 31), "too many voxels for int32 rows");
  const int64_t count = keys.numel();
  const int64_t volume = deltas.numel();
  TORCH_CHECK(table.scalar_type() == at::kInt && table.is_contiguous() &&
                  table.dim() == 2 && table.size(0) == count && table.size(1) == volume,
              "table must be contiguous int32 (V, K)");
  const int64_t* key = keys.data_ptr<int64_t>();
  const int64_t* delta = deltas.data_ptr<int64_t>();
  int32_t* out = table.data_ptr<int32_t>();
  if (!mirrored(delta, volume)) {
    const KeyMap lookup = rows_of(key, count);
    at::parallel_for(0, count, 2048, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        for (int64_t k = 0; k < volume; ++k) {
          out[row * volume + k] = static_cast<int32_t>(lookup.find(key[row] + delta[k]));
        }
      }
    });
    return;
  }
  const int64_t centre = volume / 2;  // delta 0: the row itself
  at::parallel_for(0, count, 4096, [&](int64_t begin, int64_t end) {
    std::fill(out + begin * volume, out + end * volume, -1);
  });
  if (std::adjacent_find(key, key + count, std::greater_equal<int64_t>()) == key + count) {
    // Ascending keys (every level the backend builds): for each offset the queries
    // key[row] + delta ascend too, so one merge-like walk finds them all, reading memory in
    // order instead of probing a hash. The offsets write disjoint columns.
    at::parallel_for(0, centre, 1, [&](int64_t begin, int64_t end) {
      for (int64_t k = begin; k < end; ++k) {
        int64_t at_row = 0;
        for (int64_t row = 0; row < count; ++row) {
          const int64_t query = key[row] + delta[k];
          while (at_row < count && key[at_row] < query) ++at_row;
          if (at_row == count) break;
          if (key[at_row] != query) continue;
          out[row * volume + k] = static_cast<int32_t>(at_row);
          out[at_row * volume + (volume - 1 - k)] = static_cast<int32_t>(row);
        }
      }
    });
    for (int64_t row = 0; row < count; ++row) out[row * volume + centre] = static_cast<int32_t>(row);
    return;
  }
  const KeyMap lookup = rows_of(key, count);
  at::parallel_for(0, count, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      int32_t* own = out + row * volume;
      own[centre] = static_cast<int32_t>(row);
      for (int64_t k = 0; k < centre; ++k) {
        const auto found = static_cast<int32_t>(lookup.find(key[row] + delta[k]));
        if (found < 0) continue;
        own[k] = found;
        out[static_cast<int64_t>(found) * volume + (volume - 1 - k)] = static_cast<int32_t>(row);
      }
    }
  });
}

// What is added to a convolution's output before it is stored: a per-column bias, a
// residual of the output's shape, then a ReLU (each optional). In eval mode a batch norm folds
// into the weight and the bias, so a whole conv + batch norm (+ skip) + ReLU is one pass.
template <typename T>
struct Epilogue {
  const T* bias = nullptr;      // (C_out,)
  const T* residual = nullptr;  // (V, C_out)
  bool relu = false;

  inline T apply(T value, int64_t row, int64_t col, int64_t cout) const {
    if (bias) value += bias[col];
    if (residual) value += residual[row * cout + col];
    if (relu && !(value > T(0))) value = T(0);
    return value;
  }
};

// out[o, j0:j0+B] = sum over k with table[o, k] >= 0 of features[table[o, k]] @ weight[k][:, j0:j0+B]
// Generic version (any T, B columns in a local array the compiler vectorises).
template <typename T, int B>
void conv_block(const T* features, const T* weight, const int32_t* table, T* out,
                int64_t begin, int64_t end, int64_t volume, int64_t cin, int64_t cout,
                int64_t j0, const Epilogue<T>& epilogue) {
  for (int64_t o = begin; o < end; ++o) {
    T acc[B];
    for (int j = 0; j < B; ++j) acc[j] = T(0);
    const int32_t* neighbours = table + o * volume;
    for (int64_t k = 0; k < volume; ++k) {
      const int32_t i = neighbours[k];
      if (i < 0) continue;
      const T* x = features + static_cast<int64_t>(i) * cin;
      const T* w = weight + k * cin * cout + j0;
      for (int64_t c = 0; c < cin; ++c) {
        const T xc = x[c];
        const T* wc = w + c * cout;
        for (int j = 0; j < B; ++j) acc[j] += xc * wc[j];
      }
    }
    T* y = out + o * cout + j0;
    for (int j = 0; j < B; ++j) y[j] = epilogue.apply(acc[j], o, j0 + j, cout);
  }
}

// float32: 8-wide vectors (GCC/Clang vector extension: AVX with -march=native, SSE pairs
// otherwise), 8·NV output columns at a time. Rows are taken in tiles of kTile; one pass over
// a tile's table rows marks, per kernel offset, the rows that have that neighbour as the bits
// of a mask (a sparse level has a few of the 27: walking the table's column per offset cost
// as much as the products in thin layers). For each offset the marked rows are listed, and a
// micro-kernel multiplies R of them at once by the offset's weight block (C_in x 8·NV, read
// once per tile and kept in L1), so each weight vector loaded feeds R multiply-adds; R is as
// large as the 16 vector registers allow (rows_at_once).
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
constexpr int64_t kTile = 64;
static_assert(kTile <= 64, "a tile's rows are the bits of one uint64_t mask");
// The largest kernel volume the float32 convolution masks per tile (a 5³ kernel).
constexpr int64_t kMaxVolume = 125;

inline v8 splat(float value) { return v8{value, value, value, value, value, value, value, value}; }

// Narrow blocks (up to kRegisterWeights vectors) hold the offset's weight row for one input
// channel in registers and broadcast one row's input at a time: R·NV accumulators, NV weight
// vectors and one broadcast. Wider blocks keep R·NV accumulators and R broadcasts, and load
// each weight vector from L1 once for their R rows.
constexpr int kRegisterWeights = 5;

constexpr int rows_at_once(int nv) {
  int r = 1;
  if (nv <= kRegisterWeights) {
    while (r < 8 && (r + 1) * nv + nv + 1 <= 16) ++r;
  } else {
    while (r < 8 && (r + 1) * (nv + 1) + 1 <= 16) ++r;
  }
  return r;
}

template <int R, int NV>
inline void micro_body(const float* const* xs, v8 (*const* acc)[NV], const float* w,
                       int64_t cin, int64_t cout) {
  v8 a[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) a[r][v] = (*acc[r])[v];
  for (int64_t c = 0; c < cin; ++c) {
    const float* wc = w + c * cout;
    if constexpr (NV <= kRegisterWeights) {
      v8 wv[NV];
      for (int v = 0; v < NV; ++v) {
        wv[v] = *reinterpret_cast<const v8u*>(wc + 8 * v);
        // Keeps the vector in a register: the compiler would otherwise fold the load into
        // every row's multiply-add and read it R times.
        asm("" : "+x"(wv[v]));
      }
      for (int r = 0; r < R; ++r) {
        const v8 b = splat(xs[r][c]);
        for (int v = 0; v < NV; ++v) a[r][v] += b * wv[v];
      }
    } else {
      v8 b[R];
      for (int r = 0; r < R; ++r) b[r] = splat(xs[r][c]);
      for (int v = 0; v < NV; ++v) {
        v8 wv = *reinterpret_cast<const v8u*>(wc + 8 * v);
        // One load for the R rows (folded into each multiply-add, it would be read R times:
        // measured 0.87x the time of a 48-column layer).
        if constexpr (R > 1) asm("" : "+x"(wv));
        for (int r = 0; r < R; ++r) a[r][v] += b[r] * wv;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) (*acc[r])[v] = a[r][v];
}

// Blocks of 2 to kRegisterWeights vectors multiply in a function of their own: inlined into
// the tile loop, the compiler runs short of registers and spills the row pointers and weight
// vectors inside the channel loop (a call measured 0.8-0.9x the time for 24-32 columns). One
// vector (the stem, few input channels) and the wide blocks were as fast or faster inline.
template <int R, int NV>
__attribute__((noinline)) void micro_call(const float* const* xs, v8 (*const* acc)[NV],
                                          const float* w, int64_t cin, int64_t cout) {
  micro_body<R, NV>(xs, acc, w, cin, cout);
}

template <int R, int NV>
inline void micro(const float* const* xs, v8 (*const* acc)[NV], const float* w, int64_t cin,
                  int64_t cout) {
  if constexpr (NV == 1 || NV > kRegisterWeights) {
    micro_body<R, NV>(xs, acc, w, cin, cout);
  } else {
    micro_call<R, NV>(xs, acc, w, cin, cout);
  }
}

// The last rest < R rows of a group in one micro-kernel call (more independent sums per
// weight vector than one row at a time).
template <int M, int NV>
inline void micro_rest(int rest, const float* const* xs, v8 (*const* acc)[NV], const float* w,
                       int64_t cin, int64_t cout) {
  if constexpr (M > 0) {
    if (rest == M) return micro<M, NV>(xs, acc, w, cin, cout);
    micro_rest<M - 1, NV>(rest, xs, acc, w, cin, cout);
  }
}

// A tile's neighbours per kernel offset, as a mask of the tile's rows that have one.
struct TileMask {
  const int32_t* table;  // the tile's first row of the (V, K) table
  const uint64_t* mask;  // (K,): bit r set when the tile's row r has offset k's neighbour
};

// One tile of rows [start, start + rows), output columns [j0, j0 + 8·NV).
template <int NV>
void conv_tile_f32(const float* features, const float* weight, const TileMask& tile_mask,
                   float* out, int64_t start, int64_t rows, int64_t volume, int64_t cin,
                   int64_t cout, int64_t j0, const Epilogue<float>& epilogue) {
  constexpr int R = rows_at_once(NV);
  v8 tile[kTile][NV];
  const float* xs[kTile];
  v8(*accs[kTile])[NV];
  for (int64_t r = 0; r < rows; ++r)
    for (int v = 0; v < NV; ++v) tile[r][v] = v8{};
  // Input channels in blocks whose weight slice (per offset) stays within ~16 KiB of L1.
  const int64_t cblock = std::max<int64_t>(8, 512 / NV);
  for (int64_t c0 = 0; c0 < cin; c0 += cblock) {
    const int64_t clen = std::min(cblock, cin - c0);
    for (int64_t k = 0; k < volume; ++k) {
      int n = 0;
      for (uint64_t bits = tile_mask.mask[k]; bits; bits &= bits - 1) {
        const int r = __builtin_ctzll(bits);
        xs[n] = features + static_cast<int64_t>(tile_mask.table[r * volume + k]) * cin + c0;
        accs[n] = &tile[r];
        ++n;
      }
      if (n == 0) continue;
      // The rows are scattered over the level's features (often beyond L2): ask for all
      // their cache lines now, while the micro-kernels work on the rows listed first.
      for (int m = 0; m < n; ++m)
        for (int64_t line = 0; line < clen; line += 16) __builtin_prefetch(xs[m] + line);
      const float* w = weight + (k * cin + c0) * cout + j0;
      int g = 0;
      for (; g + R <= n; g += R) micro<R, NV>(xs + g, accs + g, w, clen, cout);
      micro_rest<R - 1, NV>(n - g, xs + g, accs + g, w, clen, cout);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = start + r;
    float* y = out + row * cout + j0;
    if (epilogue.bias || epilogue.residual || epilogue.relu) {
      for (int v = 0; v < NV; ++v) {
        v8 value = tile[r][v];
        if (epilogue.bias) value += *reinterpret_cast<const v8u*>(epilogue.bias + j0 + 8 * v);
        if (epilogue.residual)
          value += *reinterpret_cast<const v8u*>(epilogue.residual + row * cout + j0 + 8 * v);
        if (epilogue.relu) value = value > 0 ? value : v8{};
        tile[r][v] = value;
      }
    }
    for (int v = 0; v < NV; ++v) *reinterpret_cast<v8u*>(y + 8 * v) = tile[r][v];
  }
}

// The masks of one tile (rows [start, start + rows)) of a (V, K) table: bit r of mask[k] is
// set when row start + r has a neighbour at offset k.
void mask_tile(const int32_t* table, int64_t start, int64_t rows, int64_t volume,
               uint64_t* mask) {
  for (int64_t k = 0; k < volume; ++k) mask[k] = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* own = table + (start + r) * volume;
    for (int64_t k = 0; k < volume; ++k) mask[k] |= static_cast<uint64_t>(own[k] >= 0) << r;
  }
}

// Output columns of one block: up to kMaxVectors vectors in a single block; wider outputs in
// blocks of at most kRegisterWeights vectors (measured 0.88-0.93x the time of 12- and 16-vector
// layers in one or two blocks, though the tile's rows are gathered once per block).
constexpr int64_t kMaxVectors = 8;

int64_t column_blocks(int64_t vectors) {
  if (vectors <= kMaxVectors) return vectors > 0 ? 1 : 0;
  return (vectors + kRegisterWeights - 1) / kRegisterWeights;
}

void conv_tile_dispatch(int64_t width, const float* f, const float* w, const TileMask& t,
                        float* y, int64_t start, int64_t rows, int64_t volume, int64_t cin,
                        int64_t cout, int64_t j, const Epilogue<float>& e) {
  switch (width) {
#define RELKD_CASE(NV) \
  case NV:             \
    return conv_tile_f32<NV>(f, w, t, y, start, rows, volume, cin, cout, j, e);
    RELKD_CASE(1) RELKD_CASE(2) RELKD_CASE(3) RELKD_CASE(4) RELKD_CASE(5) RELKD_CASE(6)
    RELKD_CASE(7) RELKD_CASE(8)
#undef RELKD_CASE
    default:
      TORCH_CHECK(false, "subm_conv: bad column block ", width);
  }
}

template <typename T>
void conv_tail(const T* features, const T* weight, const int32_t* table, T* out,
               int64_t begin, int64_t end, int64_t volume, int64_t cin, int64_t cout,
               int64_t j0, const Epilogue<T>& epilogue) {
  for (int64_t o = begin; o < end; ++o) {
    for (int64_t j = j0; j < cout; ++j) {
      T acc = T(0);
      for (int64_t k = 0; k < volume; ++k) {
        const int32_t i = table[o * volume + k];
        if (i < 0) continue;
        const T* x = features + static_cast<int64_t>(i) * cin;
        const T* w = weight + k * cin * cout + j;
        for (int64_t c = 0; c < cin; ++c) acc += x[c] * w[c * cout];
      }
      out[o * cout + j] = epilogue.apply(acc, o, j, cout);
    }
  }
}

template <typename T>
void conv_rows(const T* f, const T* w, const int32_t* t, T* y, int64_t begin, int64_t end,
               int64_t volume, int64_t cin, int64_t cout, const Epilogue<T>& e) {
  int64_t j = 0;
  for (; j + 16 <= cout; j += 16)
    conv_block<T, 16>(f, w, t, y, begin, end, volume, cin, cout, j, e);
  for (; j + 4 <= cout; j += 4) conv_block<T, 4>(f, w, t, y, begin, end, volume, cin, cout, j, e);
  if (j < cout) conv_tail<T>(f, w, t, y, begin, end, volume, cin, cout, j, e);
}

// Tiles [first_tile, last_tile) of a float32 convolution over a (V, K) table.
void conv_tiles_f32(const float* f, const float* w, const int32_t* table, float* y,
                    int64_t first_tile, int64_t last_tile, int64_t num_rows, int64_t volume,
                    int64_t cin, int64_t cout, const Epilogue<float>& e) {
  // Every column block of a tile runs before the next tile, so the tile's gathered input rows
  // are still in cache for the second block.
  const int64_t vectors = cout / 8;
  const int64_t blocks = column_blocks(vectors);
  uint64_t mask[kMaxVolume];
  for (int64_t tile = first_tile; tile < last_tile; ++tile) {
    const int64_t start = tile * kTile;
    const int64_t rows = std::min(kTile, num_rows - start);
    mask_tile(table, start, rows, volume, mask);
    const TileMask tile_mask{table + start * volume, mask};
    int64_t j = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t width = vectors / blocks + (b < vectors % blocks ? 1 : 0);
      conv_tile_dispatch(width, f, w, tile_mask, y, start, rows, volume, cin, cout, j, e);
      j += 8 * width;
    }
    if (j < cout)
      conv_tail<float>(f, w, table, y, start, start + rows, volume, cin, cout, j, e);
  }
}

template <typename T>
void subm_conv_typed(const at::Tensor& features, const at::Tensor& weight,
                     const at::Tensor& table, const at::Tensor& out,
                     const std::optional<at::Tensor>& bias,
                     const std::optional<at::Tensor>& residual, bool relu) {
  Epilogue<T> e;
  e.bias = bias ? bias->data_ptr<T>() : nullptr;
  e.residual = residual ? residual->data_ptr<T>() : nullptr;
  e.relu = relu;
  const int64_t rows = table.size(0);
  const int64_t volume = weight.size(0);
  const int64_t cin = weight.size(1);
  const int64_t cout = weight.size(2);
  const T* f = features.data_ptr<T>();
  const T* w = weight.data_ptr<T>();
  const int32_t* t = table.data_ptr<int32_t>();
  T* y = out.data_ptr<T>();
  // About 64k multiply-adds per task, so small levels stay on one thread.
  const int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(1, 10 * cin * cout));
  if constexpr (std::is_same_v<T, float>) {
    if (volume <= kMaxVolume) {
      const int64_t tiles = (rows + kTile - 1) / kTile;
      at::parallel_for(0, tiles, std::max<int64_t>(1, grain / kTile),
                       [&](int64_t first, int64_t last) {
                         conv_tiles_f32(f, w, t, y, first, last, rows, volume, cin, cout, e);
                       });
      return;
    }
  }
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    conv_rows<T>(f, w, t, y, begin, end, volume, cin, cout, e);
  });
}

// out (V, C_out) = submanifold convolution of features (V_in, C_in) with weight (K, C_in, C_out)
// over a neighbour table (V, K) int32, then the epilogue (optional bias (C_out,), residual
// (V, C_out), ReLU).
void subm_conv(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& table,
               const at::Tensor& out, const std::optional<at::Tensor>& bias,
               const std::optional<at::Tensor>& residual, bool relu) {
  TORCH_CHECK(features.device().is_cpu(), "subm_conv: CPU tensors only");
  TORCH_CHECK(features.is_contiguous() && weight.is_contiguous() && table.is_contiguous() &&
                  out.is_contiguous(),
              "subm_conv: contiguous tensors only");
  TORCH_CHECK(features.scalar_type() == weight.scalar_type() &&
                  features.scalar_type() == out.scalar_type(),
              "subm_conv: features, weight and out must share a dtype");
  TORCH_CHECK(table.scalar_type() == at::kInt && table.dim() == 2 &&
                  table.size(1) == weight.size(0),
              "subm_conv: table must be int32 (V, K)");
  TORCH_CHECK(features.dim() == 2 && features.size(1) == weight.size(1), "subm_conv: C_in");
  TORCH_CHECK(out.dim() == 2 && out.size(0) == table.size(0) && out.size(1) == weight.size(2),
              "subm_conv: out must be (V, C_out)");
  if (bias) {
    TORCH_CHECK(bias->scalar_type() == out.scalar_type() && bias->is_contiguous() &&
                    bias->numel() == out.size(1),
                "subm_conv: bias must be contiguous (C_out,) of the output's dtype");
  }
  if (residual) {
    TORCH_CHECK(residual->scalar_type() == out.scalar_type() && residual->is_contiguous() &&
                    residual->sizes() == out.sizes(),
                "subm_conv: residual must be contiguous, of the output's shape and dtype");
  }
  if (features.scalar_type() == at::kFloat) {
    subm_conv_typed<float>(features, weight, table, out, bias, residual, relu);
  } else if (features.scalar_type() == at::kDouble) {
    subm_conv_typed<double>(features, weight, table, out, bias, residual, relu);
  } else {
    TORCH_CHECK(false, "subm_conv: float32 or float64 only, got ", features.scalar_type());
  }
}

// The next level of a voxel pyramid: what native.coarser_level computes, with a hash instead
// of sorting every fine voxel. fine: (V, 4) int64 (batch, x, y, z), spatial columns >= 0;
// sizes: the key radix (3,) and pad as native.pack_keys uses them. Writes the first V_c rows
// of coarse (V, 4) and coarse_keys (V,) (ascending keys), child_order (V,) (fine rows grouped
// by child offset x + 2y + 4z, in row order within an offset), parent (V,) (the coarse row of
// each of them) and counts (8,); returns V_c.
int64_t coarsen(const at::Tensor& fine, const at::Tensor& sizes, int64_t pad,
                const at::Tensor& coarse, const at::Tensor& coarse_keys,
                const at::Tensor& child_order, const at::Tensor& parent, const at::Tensor& counts) {
  const int64_t count = fine.size(0);
  for (const at::Tensor* t : {&fine, &sizes, &coarse, &coarse_keys, &child_order, &parent,
                              &counts}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kLong && t->is_contiguous(),
                "coarsen: contiguous int64 CPU tensors only");
  }
  TORCH_CHECK(fine.dim() == 2 && fine.size(1) == 4 && sizes.numel() == 3 && counts.numel() == 8 &&
                  coarse.size(0) == count && coarse_keys.numel() == count &&
                  child_order.numel() == count && parent.numel() == count,
              "coarsen: bad shapes");
  TORCH_CHECK(count < (int64_t{1} << 31), "coarsen: too many voxels");
  const int64_t* c = fine.data_ptr<int64_t>();
  const int64_t* size = sizes.data_ptr<int64_t>();
  std::vector<int64_t> keys(count);
  std::vector<int8_t> offsets(count);
  for (int64_t row = 0; row < count; ++row) {
    const int64_t* r = c + 4 * row;
    TORCH_CHECK(r[1] >= 0 && r[2] >= 0 && r[3] >= 0, "coarsen: spatial coordinates must be >= 0");
    keys[row] = ((r[0] * size[0] + (r[1] >> 1) + pad) * size[1] + (r[2] >> 1) + pad) * size[2] +
                (r[3] >> 1) + pad;
    offsets[row] = static_cast<int8_t>((r[1] & 1) + 2 * (r[2] & 1) + 4 * (r[3] & 1));
  }
  // Distinct parent keys in first-seen order (with the first fine row of each), then ranked.
  DistinctKeys parents_seen(count / 2);
  std::vector<int32_t> first_seen(count);
  std::vector<int32_t> first_row;  // by parent id
  first_row.reserve(count / 2 + 16);
  for (int64_t row = 0; row < count; ++row) {
    first_seen[row] = parents_seen.id(keys[row]);
    if (first_seen[row] == static_cast<int64_t>(first_row.size())) {
      first_row.push_back(static_cast<int32_t>(row));
    }
  }
  const int64_t num_coarse = parents_seen.size();
  std::vector<int32_t> rank;
  const std::vector<int32_t> by_key = parents_seen.by_key(rank);
  int64_t* out_coords = coarse.data_ptr<int64_t>();
  int64_t* out_keys = coarse_keys.data_ptr<int64_t>();
  for (int64_t i = 0; i < num_coarse; ++i) {
    out_keys[i] = parents_seen.key(by_key[i]);
    const int64_t* r = c + 4 * static_cast<int64_t>(first_row[by_key[i]]);
    out_coords[4 * i] = r[0];
    for (int axis = 1; axis < 4; ++axis) out_coords[4 * i + axis] = r[axis] >> 1;
  }
  // Fine rows grouped by child offset (a stable counting sort), with their parents.
  int64_t* out_counts = counts.data_ptr<int64_t>();
  std::fill(out_counts, out_counts + 8, 0);
  for (int64_t row = 0; row < count; ++row) ++out_counts[offsets[row]];
  int64_t start[8];
  start[0] = 0;
  for (int k = 1; k < 8; ++k) start[k] = start[k - 1] + out_counts[k - 1];
  int64_t* order = child_order.data_ptr<int64_t>();
  int64_t* parents = parent.data_ptr<int64_t>();
  for (int64_t row = 0; row < count; ++row) {
    const int64_t at = start[offsets[row]]++;
    order[at] = row;
    parents[at] = rank[first_seen[row]];
  }
  return num_coarse;
}

// The stride-2 map between a level and the next as two tables over the 8 child offsets, from
// coarsen's outputs: down (V_c, 8) the child row of each coarse voxel, up (V, 8) the parent row
// of each fine voxel at its own offset; -1 elsewhere.
void stride_tables(const at::Tensor& child_order, const at::Tensor& parent,
                   const at::Tensor& counts, const at::Tensor& down, const at::Tensor& up) {
  for (const at::Tensor* t : {&child_order, &parent, &counts}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kLong && t->is_contiguous(),
                "stride_tables: contiguous int64 CPU tensors only");
  }
  for (const at::Tensor* t : {&down, &up}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kInt && t->is_contiguous() &&
                    t->dim() == 2 && t->size(1) == 8,
                "stride_tables: tables must be contiguous (V, 8) int32");
  }
  const int64_t count = child_order.numel();
  TORCH_CHECK(parent.numel() == count && counts.numel() == 8 && up.size(0) == count,
              "stride_tables: bad shapes");
  const int64_t* order = child_order.data_ptr<int64_t>();
  const int64_t* parents = parent.data_ptr<int64_t>();
  const int64_t* per_offset = counts.data_ptr<int64_t>();
  const int64_t num_coarse = down.size(0);
  int32_t* down_out = down.data_ptr<int32_t>();
  int32_t* up_out = up.data_ptr<int32_t>();
  std::fill(down_out, down_out + num_coarse * 8, -1);
  std::fill(up_out, up_out + count * 8, -1);
  int64_t at = 0;
  for (int offset = 0; offset < 8; ++offset) {
    TORCH_CHECK(per_offset[offset] >= 0 && at + per_offset[offset] <= count,
                "stride_tables: counts do not add up to the rows");
    for (const int64_t end = at + per_offset[offset]; at < end; ++at) {
      const int64_t row = order[at], coarse = parents[at];
      TORCH_CHECK(row >= 0 && row < count && coarse >= 0 && coarse < num_coarse,
                  "stride_tables: row out of range");
      down_out[coarse * 8 + offset] = static_cast<int32_t>(row);
      up_out[row * 8 + offset] = static_cast<int32_t>(coarse);
    }
  }
}

// The best text entry of every voxel from the labelling head folded down to the last stage's
// width (relkd_core.models.inference._head_cosines, followed by a max over the entries): per
// row u of hidden (V, L), acc = offset + u @ matrix (K = C + 2L + 1 columns: the C text dots,
// the two quadratic-form blocks, y·Wᵀb); then |y|² and |W y|², the C cosines and their
// maximum. Eight rows at a time, one per vector lane. Writes index (V,) int64 and score (V,)
// float32; ties go to the lowest entry.
typedef int32_t v8i __attribute__((vector_size(32)));

void best_match(const at::Tensor& hidden, const at::Tensor& matrix, const at::Tensor& offset,
                const at::Tensor& text_bias, bool normalize, double f_dot_f, double f_gram_f,
                double b_dot_b, const at::Tensor& index, const at::Tensor& score) {
  for (const at::Tensor* t : {&hidden, &matrix, &offset, &text_bias, &score}) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "best_match: contiguous float32 CPU tensors only");
  }
  TORCH_CHECK(hidden.dim() == 2 && matrix.dim() == 2, "best_match: bad shapes");
  const int64_t rows = hidden.size(0), width = hidden.size(1);
  const int64_t columns = matrix.size(1), count = text_bias.numel();
  TORCH_CHECK(matrix.size(0) == width && columns == count + 2 * width + 1 &&
                  offset.numel() == columns && count > 0 && count < (int64_t{1} << 31) &&
                  score.numel() == rows,
              "best_match: bad shapes");
  TORCH_CHECK(index.scalar_type() == at::kLong && index.is_contiguous() && index.numel() == rows,
              "best_match: index must be contiguous (V,) int64");
  const float* u_all = hidden.data_ptr<float>();
  const float* eb = text_bias.data_ptr<float>();
  int64_t* best_out = index.data_ptr<int64_t>();
  float* score_out = score.data_ptr<float>();
  // The matrix and offset with their columns padded to a multiple of 8 (zeros).
  const int64_t padded = (columns + 7) / 8 * 8;
  std::vector<float> m(width * padded, 0.0f), o(padded, 0.0f);
  for (int64_t j = 0; j < width; ++j) {
    const float* source = matrix.data_ptr<float>() + j * columns;
    std::copy(source, source + columns, m.begin() + j * padded);
  }
  std::copy(offset.data_ptr<float>(), offset.data_ptr<float>() + columns, o.begin());
  const float ff = static_cast<float>(f_dot_f), fgf = static_cast<float>(f_gram_f);
  const float bb = static_cast<float>(b_dot_b);
  const int64_t blocks = (rows + 7) / 8;
  at::parallel_for(0, blocks, 32, [&](int64_t begin, int64_t end) {
    std::vector<v8> u(width), acc(padded);
    for (int64_t block = begin; block < end; ++block) {
      const int64_t start = block * 8, lanes = std::min<int64_t>(8, rows - start);
      for (int64_t j = 0; j < width; ++j) {
        v8 x{};
        for (int64_t r = 0; r < lanes; ++r) x[r] = u_all[(start + r) * width + j];
        u[j] = x;
      }
      for (int64_t k0 = 0; k0 < padded; k0 += 8) {
        v8 a[8];
        for (int i = 0; i < 8; ++i) a[i] = splat(o[k0 + i]);
        for (int64_t j = 0; j < width; ++j) {
          const v8 x = u[j];
          const float* mj = m.data() + j * padded + k0;
          for (int i = 0; i < 8; ++i) a[i] += x * splat(mj[i]);
        }
        for (int i = 0; i < 8; ++i) acc[k0 + i] = a[i];
      }
      v8 y_y = splat(ff), y_gram_y = splat(fgf);
      for (int64_t j = 0; j < width; ++j) {
        y_y += acc[count + j] * u[j];
        y_gram_y += acc[count + width + j] * u[j];
      }
      const v8 y_dot_wb = acc[columns - 1];
      v8 scale = splat(1.0f), norm = splat(1.0f);
      for (int r = 0; r < 8; ++r) {
        float s = 1.0f, quadratic = y_gram_y[r], linear = y_dot_wb[r];
        if (normalize) {  // F.normalize divides by max(|y|, 1e-12)
          s = 1.0f / std::max(std::sqrt(std::max(y_y[r], 0.0f)), 1e-12f);
          quadratic *= s * s;
          linear *= s;
        }
        scale[r] = s;
        norm[r] = std::max(std::sqrt(std::max(quadratic + 2.0f * linear + bb, 0.0f)), 1e-12f);
      }
      v8 best_cos = (acc[0] * scale + splat(eb[0])) / norm;
      v8i best{};
      for (int64_t c = 1; c < count; ++c) {
        const v8 cos = (acc[c] * scale + splat(eb[c])) / norm;
        const v8i better = cos > best_cos;
        best_cos = better ? cos : best_cos;
        best = better ? v8i{} + static_cast<int32_t>(c) : best;
      }
      for (int64_t r = 0; r < lanes; ++r) {
        best_out[start + r] = best[r];
        score_out[start + r] = best_cos[r];
      }
    }
  });
}

// Cartesian voxelization of one scan: what relkd_core.geometry.voxel computes (cells
// floor(xyz / voxel_size) in float64, the occupied cells sorted lexicographically, the cell
// of every point, the per-voxel mean of the point values), with a hash instead of a sort of
// every point. points: (N, 4) float32 x, y, z, intensity, all finite; mode: 0 ones, 1 the
// mean intensity, 2 the mean of all four columns. Writes the first V rows of cells (N, 3)
// and features (N, C), and inverse (N,); returns V, or -1 when the cells span too much to pack
// into int64 keys (the caller runs the reference, which says so).
int64_t voxelize(const at::Tensor& points, double voxel_size, int64_t mode, const at::Tensor& cells,
                 const at::Tensor& inverse, const at::Tensor& features) {
  TORCH_CHECK(points.device().is_cpu() && points.scalar_type() == at::kFloat &&
                  points.is_contiguous() && points.dim() == 2 && points.size(1) == 4,
              "voxelize: points must be contiguous (N, 4) float32 on CPU");
  const int64_t count = points.size(0);
  const int64_t channels = mode == 2 ? 4 : 1;
  TORCH_CHECK(mode >= 0 && mode <= 2, "voxelize: mode must be 0, 1 or 2");
  TORCH_CHECK(cells.scalar_type() == at::kLong && cells.is_contiguous() &&
                  cells.size(0) == count && cells.size(1) == 3,
              "voxelize: cells must be contiguous (N, 3) int64");
  TORCH_CHECK(inverse.scalar_type() == at::kLong && inverse.is_contiguous() &&
                  inverse.numel() == count,
              "voxelize: inverse must be contiguous (N,) int64");
  TORCH_CHECK(features.scalar_type() == at::kFloat && features.is_contiguous() &&
                  features.size(0) == count && features.size(1) == channels,
              "voxelize: features must be contiguous (N, C) float32");
  TORCH_CHECK(count < (int64_t{1} << 31), "voxelize: too many points");
  TORCH_CHECK(voxel_size > 0.0, "voxelize: voxel_size must be > 0");
  if (count == 0) return 0;
  const float* p = points.data_ptr<float>();
  // Memory is what costs here, so the cells are computed twice rather than stored: once for
  // their extent, once for their keys.
  const auto cell = [&](int64_t row, int axis) {
    return std::floor(static_cast<double>(p[4 * row + axis]) / voxel_size);
  };
  double low[3], high[3];
  for (int axis = 0; axis < 3; ++axis) low[axis] = high[axis] = cell(0, axis);
  for (int64_t row = 1; row < count; ++row) {
    for (int axis = 0; axis < 3; ++axis) {
      const double value = cell(row, axis);
      low[axis] = std::min(low[axis], value);
      high[axis] = std::max(high[axis], value);
    }
  }
  double volume = 1.0;
  int64_t size[3], base[3];
  for (int axis = 0; axis < 3; ++axis) {
    if (!(low[axis] > -4.0e18 && high[axis] < 4.0e18)) return -1;  // beyond int64
    base[axis] = static_cast<int64_t>(low[axis]);
    size[axis] = static_cast<int64_t>(high[axis]) - base[axis] + 1;
    volume *= static_cast<double>(size[axis]);
  }
  if (volume >= 4.611686018427387904e18) return -1;  // 2^62, as unique_coordinates checks
  // Distinct cells in first-seen order (an id per cell, the point's id written to inverse for
  // now), then ranked by key (= lexicographic cell order). Consecutive points of a scan often
  // share a cell: those skip the hash.
  DistinctKeys voxels(count / 4);
  int64_t* out_inverse = inverse.data_ptr<int64_t>();
  int64_t previous = -1, previous_id = -1;
  for (int64_t row = 0; row < count; ++row) {
    int64_t key = 0;
    for (int axis = 0; axis < 3; ++axis) {
      key = key * size[axis] + (static_cast<int64_t>(cell(row, axis)) - base[axis]);
    }
    if (key != previous) {
      previous = key;
      previous_id = voxels.id(key);
    }
    out_inverse[row] = previous_id;
  }
  const int64_t num_voxels = voxels.size();
  std::vector<int32_t> rank;
  const std::vector<int32_t> by_key = voxels.by_key(rank);
  int64_t* out_cells = cells.data_ptr<int64_t>();
  for (int64_t i = 0; i < num_voxels; ++i) {
    int64_t key = voxels.key(by_key[i]);
    for (int axis = 2; axis >= 0; --axis) {
      out_cells[3 * i + axis] = key % size[axis] + base[axis];
      key /= size[axis];
    }
  }
  // Per-voxel means: sums in point order (as index_add_ makes them), then / count.
  float* out = features.data_ptr<float>();
  std::fill(out, out + num_voxels * channels, 0.0f);
  std::vector<int32_t> counts(num_voxels, 0);
  const int64_t first = mode == 1 ? 3 : 0;
  for (int64_t row = 0; row < count; ++row) {
    const int64_t voxel = rank[out_inverse[row]];
    out_inverse[row] = voxel;
    ++counts[voxel];
    if (mode == 0) continue;
    for (int64_t c = 0; c < channels; ++c) out[voxel * channels + c] += p[4 * row + first + c];
  }
  for (int64_t voxel = 0; voxel < num_voxels; ++voxel) {
    for (int64_t c = 0; c < channels; ++c) {
      float& value = out[voxel * channels + c];
      value = mode == 0 ? 1.0f : value / static_cast<float>(counts[voxel]);
    }
  }
  return num_voxels;
}

}  // namespace

TORCH_LIBRARY(relkd_native, m) {
  m.def("neighbor_table(Tensor keys, Tensor deltas, Tensor(a!) table) -> ()", &neighbor_table);
  m.def("subm_conv(Tensor features, Tensor weight, Tensor table, Tensor(a!) out, "
        "Tensor? bias=None, Tensor? residual=None, bool relu=False) -> ()",
        &subm_conv);
  m.def("coarsen(Tensor fine, Tensor sizes, int pad, Tensor(a!) coarse, Tensor(b!) coarse_keys, "
        "Tensor(c!) child_order, Tensor(d!) parent, Tensor(e!) counts) -> int",
        &coarsen);
  m.def("stride_tables(Tensor child_order, Tensor parent, Tensor counts, Tensor(a!) down, "
        "Tensor(b!) up) -> ()",
        &stride_tables);
  m.def("best_match(Tensor hidden, Tensor matrix, Tensor offset, Tensor text_bias, bool normalize, "
        "float f_dot_f, float f_gram_f, float b_dot_b, Tensor(a!) index, Tensor(b!) score) -> ()",
        &best_match);
  m.def("voxelize(Tensor points, float voxel_size, int mode, Tensor(a!) cells, "
        "Tensor(b!) inverse, Tensor(c!) features) -> int",
        &voxelize);
}
