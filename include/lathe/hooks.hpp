// Hooks on the residual stream: named points inside the forward pass where a caller can read the
// hidden state (capture, mean-reduced on the fly), add a vector to it (steering / control
// vectors), project a direction out of it, or transform whole rows (RowTransform: e.g. a
// sparse-autoencoder feature gate). Attach a set of hooks to a Session with
// Session::set_hooks(); with none attached the forward pass pays one pointer test per point.
//
// Hook points (n_embd-wide rows, one per evaluated token):
//   blocks.{i}.resid_pre   the residual stream entering block i
//   blocks.{i}.resid_mid   after block i's attention has been added
//   blocks.{i}.resid_post  after block i's MLP has been added (= resid_pre of block i+1)
//   final_norm             the output of the final RMSNorm (only the rows that get logits)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lathe {

enum class HookPoint { ResidPre, ResidMid, ResidPost, FinalNorm };

struct HookSite {
  HookPoint point = HookPoint::ResidPost;
  uint32_t layer = 0;  // ignored for FinalNorm

  // "blocks.3.resid_post", "final_norm"; InvalidArgumentError listing the accepted forms.
  static HookSite parse(std::string_view name);
  std::string name() const;
  bool operator==(const HookSite& other) const noexcept;
};

// Which rows a capture reads from each eval(): the last token of the call (e.g. the last prompt
// token) or every token.
enum class CaptureRows { Last, All };

// A general edit of the residual stream: rewrites rows in place. Hooks call it with the rows of
// one sequence at a time (every token of the call at that point), in registration order with the
// other hooks of the site. Not called from two threads at once for one object.
class RowTransform {
 public:
  virtual ~RowTransform() = default;
  // The row width it works on (the model's n_embd); validate() refuses any other.
  virtual int64_t width() const noexcept = 0;
  // What it is, for error messages ("SAE gate of PATH").
  virtual std::string describe() const = 0;
  // rows: [n_rows x width], row-major.
  virtual void apply(float* rows, int64_t n_rows, int64_t width) = 0;

  // Optional: the same transform on rows in device memory. Without it the CUDA forward pass
  // copies the rows to the host and back around apply(), and cannot replay the decode step as a
  // captured graph. prepare_device() readies what the device path needs on CUDA device `device`
  // for passes of up to max_rows rows (uploads, scratch); it is called outside any capture before
  // every pass that may take the device path (so it must return quickly once ready), and returns
  // false when this transform has no device path (the default). apply_on_device() gets
  // device rows [n_rows x width] and the pass's cudaStream_t; it may only enqueue work on that
  // stream (no synchronisation, no allocation), so that a captured decode step can contain it.
  virtual bool prepare_device(int device, int64_t max_rows) {
    (void)device, (void)max_rows;
    return false;
  }
  virtual void apply_on_device(float* rows, int64_t n_rows, int64_t width, void* stream) {
    (void)rows, (void)n_rows, (void)width, (void)stream;
  }
};

class ResidualHooks {
 public:
  // x += scale * vector at `site` for every token.
  void add(HookSite site, std::vector<float> vector, float scale = 1.0f);
  // x -= (x . d) d with d = direction / |direction| at `site` for every token.
  // InvalidArgumentError for a zero or non-finite direction.
  void project_out(HookSite site, std::vector<float> direction);
  // Runs `transform` over the rows at `site` for every token. InvalidArgumentError for nullptr.
  void transform(HookSite site, std::shared_ptr<RowTransform> transform);
  // Accumulates the selected rows (after the add/project hooks registered before it at the same
  // site) into a float64 sum; returns the capture's id.
  size_t capture(HookSite site, CaptureRows rows = CaptureRows::Last);

  struct Capture {
    HookSite site;
    CaptureRows rows = CaptureRows::Last;
    std::vector<double> sum;  // empty until the first row arrives
    uint64_t count = 0;       // rows accumulated
    std::vector<double> mean() const;  // InvalidArgumentError when count == 0
  };
  const Capture& captured(size_t id) const;
  size_t n_captures() const noexcept { return captures_.size(); }
  void reset_captures();  // zero every sum and count, keep the captures
  void clear();           // remove every hook
  bool empty() const noexcept { return ops_.empty(); }

  // Throws InvalidArgumentError naming the hook when a layer is >= n_layer or a vector's length
  // (a transform's width) is not n_embd. Session::set_hooks() and every eval() call it.
  void validate(uint32_t n_layer, uint32_t n_embd) const;

  // Runs the hooks of `site` over rows [n_rows x width] (the forward pass calls this).
  // `last_rows_of_call`: whether these rows end the eval() call (for CaptureRows::Last).
  void apply(HookSite site, float* rows, int64_t n_rows, int64_t width, bool last_rows_of_call);
  // Whether any hook is registered at this site (cheap; lets the forward pass skip work).
  bool has(HookSite site) const noexcept;

  // The device path (CUDA forward pass). on_device(): whether every hook of this set runs on
  // device rows, i.e. each is a transform whose prepare_device(device, max_rows) succeeds (adds,
  // projections and captures run on the host). apply_on_device(): runs the hooks of `site` on
  // device rows; only after on_device() returned true for the same device.
  bool on_device(int device, int64_t max_rows);
  void apply_on_device(HookSite site, float* rows, int64_t n_rows, int64_t width, void* stream);
  // Changes whenever a hook is added or the set cleared, to a value no other set of the process
  // had (a copy keeps it until either changes): a captured decode step that ran these hooks is
  // replayed only while it holds. 0 for an empty set.
  uint64_t generation() const noexcept { return generation_; }

 private:
  enum class Kind { Add, ProjectOut, Capture, Transform };
  struct Op {
    HookSite site;
    Kind kind;
    std::vector<float> vector;  // Add: the vector; ProjectOut: unit direction
    float scale = 1.0f;
    size_t capture = 0;  // index into captures_
    std::shared_ptr<RowTransform> transform;  // Transform only
  };
  void changed() noexcept;
  std::vector<Op> ops_;
  std::vector<Capture> captures_;
  uint64_t generation_ = 0;
};

}  // namespace lathe
