"""Shared helpers for the llama.cpp peer scripts (llama-cpp-python, installed by scripts/lib.sh)."""
import sys

KV_TYPES = {"f16": 1, "f32": 0, "q8_0": 8}  # GGML_TYPE_F16 (llama.cpp's default KV type), _F32, _Q8_0


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_llama(model, n_ctx, n_batch, threads, logits_all, kv_type="f16", seed=0, flash_attn=False,
               extra_buffers=True, lora_path=None, lora_scale=1.0):
    """A llama-cpp-python Llama on the CPU. extra_buffers=False keeps every weight in llama.cpp's
    plain CPU buffer: no runtime repacking and no AMX tiles, whatever the CPU offers, so that
    llama.cpp computes with the same kernels on every machine. Correctness oracles pass False; the
    speed peer keeps llama.cpp's default (True), its fastest path on the machine at hand.
    lora_path / lora_scale: a LoRA adapter GGUF applied at run time (llama.cpp's --lora)."""
    try:
        import llama_cpp
        from llama_cpp import Llama
    except ImportError as e:
        fail(f"llama-cpp-python is not installed in {sys.executable} ({e}); run scripts/test.sh, which builds "
             f"and installs it into .venv")
    # Llama() takes its model parameters from llama_model_default_params() and has no argument for
    # use_extra_bufts (llama-cpp-python 0.3.36), so the default is overridden around the load.
    library = llama_cpp.llama_cpp
    default_params = library.llama_model_default_params

    def params_without_extra_buffers():
        params = default_params()
        params.use_extra_bufts = False
        return params

    if not extra_buffers:
        library.llama_model_default_params = params_without_extra_buffers
    # n_ubatch = n_batch: one physical batch, so the logits do not depend on how llama.cpp splits it.
    # llama.cpp keeps a quantized V cache only with flash attention.
    flash_attn = flash_attn or kv_type == "q8_0"
    try:
        return Llama(model_path=str(model), n_ctx=max(n_ctx, 16), n_batch=n_batch, n_ubatch=n_batch,
                     n_threads=threads, n_threads_batch=threads, logits_all=logits_all, flash_attn=flash_attn,
                     type_k=KV_TYPES[kv_type], type_v=KV_TYPES[kv_type], seed=seed, verbose=False,
                     lora_path=None if lora_path is None else str(lora_path), lora_scale=lora_scale)
    finally:
        library.llama_model_default_params = default_params


def system_info():
    """llama.cpp's one-line report of the CPU features it was built with (AVX2, AMX, OPENMP, ...)."""
    import llama_cpp
    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()
