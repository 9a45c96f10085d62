//! Our CUDA kernels as MLX runs them: sources compiled at run time by MLX
//! (NVRTC, `mlx_fast_cuda_kernel`) on first use of each variant, queued on
//! a stream like any MLX operation. The kernels themselves are in
//! `kernels/`; [`crate::qmm_rows`] and [`crate::attend_rows`] pick them.
//! Nothing here runs without a CUDA device: the same binary keeps using
//! MLX's own operations on the CPU and on Metal.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock};

use mlx_rs::{Array, Dtype, Stream};

use crate::{Error, Result};

/// Whether MLX has a CUDA device here.
pub(crate) fn cuda_present() -> bool {
    static CUDA: OnceLock<bool> = OnceLock::new();
    *CUDA.get_or_init(|| {
        let mut cuda = false;
        // SAFETY: plain out-parameter call.
        let status = unsafe { mlx_sys::mlx_cuda_is_available(&mut cuda) };
        status == 0 && cuda
    })
}

/// Whether `stream` runs on the GPU.
pub(crate) fn on_gpu(stream: &Stream) -> bool {
    // SAFETY: out-parameter calls on a device handle made and freed here.
    unsafe {
        let mut device = mlx_sys::mlx_device_new();
        let mut kind = mlx_sys::mlx_device_type__MLX_CPU;
        let ok = mlx_sys::mlx_stream_get_device(&mut device, stream.as_ptr()) == 0
            && mlx_sys::mlx_device_get_type(&mut kind, device) == 0;
        mlx_sys::mlx_device_free(device);
        ok && kind == mlx_sys::mlx_device_type__MLX_GPU
    }
}

/// The setting environment variable `var` asks for among `names` (any
/// case); unset or empty, the first. Another value is named in a warning
/// and the first is used.
pub(crate) fn env_setting(var: &str, names: &[&'static str]) -> &'static str {
    let Ok(value) = std::env::var(var) else {
        return names[0];
    };
    if value.is_empty() {
        return names[0];
    }
    if let Some(name) = names.iter().find(|n| n.eq_ignore_ascii_case(&value)) {
        return name;
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    eprintln!(
        "warning: {var}={value:?} is not one of {}; using {:?} where it applies",
        quoted.join(", "),
        names[0]
    );
    names[0]
}

/// Each kernel variant's self-check, run once (on first use) and
/// remembered: a variant that does not compile or agree is not used again.
pub(crate) struct Checks<V> {
    verdicts: OnceLock<Mutex<HashMap<V, bool>>>,
}

impl<V: Copy + Eq + Hash + Debug> Checks<V> {
    pub(crate) const fn new() -> Self {
        Checks {
            verdicts: OnceLock::new(),
        }
    }

    /// Whether `variant` passed `check` (run now if it has not run yet);
    /// a failure is said once: `kernel`'s variant failed, `instead` is used.
    pub(crate) fn passed(
        &self,
        variant: V,
        kernel: &str,
        instead: &str,
        check: impl FnOnce() -> Result<()>,
    ) -> bool {
        let verdicts = self.verdicts.get_or_init(|| Mutex::new(HashMap::new()));
        if let Some(&ok) = verdicts.lock().expect("not poisoned").get(&variant) {
            return ok;
        }
        let verdict = check();
        if let Err(why) = &verdict {
            eprintln!(
                "warning: the {kernel} CUDA kernel ({variant:?}) failed its check ({why}); \
                 using {instead} for these shapes"
            );
        }
        let ok = verdict.is_ok();
        verdicts.lock().expect("not poisoned").insert(variant, ok);
        ok
    }
}

/// A template argument of one kernel variant (a constant in its source).
#[derive(Clone, Copy)]
pub(crate) enum TemplateArg<'a> {
    Dtype(&'a CStr, Dtype),
    Int(&'a CStr, i32),
    Bool(&'a CStr, bool),
}

/// A kernel object: its sources, kept by MLX, which compiles each variant
/// once, on first use.
pub(crate) struct CudaKernel {
    handle: mlx_sys::mlx_fast_cuda_kernel,
    name: String,
}

// SAFETY: the handle wraps an immutable std::function over the kernel's
// sources; MLX's kernel cache behind it is locked.
unsafe impl Send for CudaKernel {}
unsafe impl Sync for CudaKernel {}

impl CudaKernel {
    /// A kernel `name` with a body over `inputs` and `outputs` (MLX writes
    /// the signature from the arrays' types) after `header`. Inputs are
    /// made row-contiguous by MLX where they are not.
    pub(crate) fn new(
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        body: &str,
        header: &str,
    ) -> Self {
        let c = |s: &str| CString::new(s).expect("no NUL in a kernel's names or sources");
        let (c_name, source, c_header) = (c(name), c(body), c(header));
        // SAFETY: the vectors and strings live across the call; mlx-c copies them.
        let handle = unsafe {
            let names = mlx_sys::mlx_vector_string_new();
            for input in inputs {
                mlx_sys::mlx_vector_string_append_value(names, c(input).as_ptr());
            }
            let output_names = mlx_sys::mlx_vector_string_new();
            for output in outputs {
                mlx_sys::mlx_vector_string_append_value(output_names, c(output).as_ptr());
            }
            let handle = mlx_sys::mlx_fast_cuda_kernel_new(
                c_name.as_ptr(),
                names,
                output_names,
                source.as_ptr(),
                c_header.as_ptr(),
                true,
                0,
            );
            mlx_sys::mlx_vector_string_free(names);
            mlx_sys::mlx_vector_string_free(output_names);
            handle
        };
        CudaKernel {
            handle,
            name: name.to_string(),
        }
    }

    /// Queues the variant `template` of the kernel on `inputs` over `blocks`
    /// (x, y, z) of `threads` threads, returning its outputs (`outputs`:
    /// each one's shape and dtype).
    pub(crate) fn apply(
        &self,
        inputs: &[&Array],
        outputs: &[(&[i32], Dtype)],
        template: &[TemplateArg<'_>],
        blocks: (i32, i32, i32),
        threads: i32,
        stream: &Stream,
    ) -> Result<Vec<Array>> {
        crate::quant::ensure_mlx_error_handler();
        // SAFETY: every handle made here is freed here; the result arrays
        // are copied into owned handles before the vector is freed.
        unsafe {
            let config = mlx_sys::mlx_fast_cuda_kernel_config_new();
            let mut status = 0;
            for (shape, dtype) in outputs {
                status |= mlx_sys::mlx_fast_cuda_kernel_config_add_output_arg(
                    config,
                    shape.as_ptr(),
                    shape.len(),
                    *dtype as mlx_sys::mlx_dtype,
                );
            }
            status |= mlx_sys::mlx_fast_cuda_kernel_config_set_grid(
                config,
                blocks.0 * threads,
                blocks.1,
                blocks.2,
            );
            status |= mlx_sys::mlx_fast_cuda_kernel_config_set_thread_group(config, threads, 1, 1);
            for arg in template {
                status |= match *arg {
                    TemplateArg::Dtype(name, dtype) => {
                        mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_dtype(
                            config,
                            name.as_ptr(),
                            dtype as mlx_sys::mlx_dtype,
                        )
                    }
                    TemplateArg::Int(name, value) => {
                        mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_int(
                            config,
                            name.as_ptr(),
                            value,
                        )
                    }
                    TemplateArg::Bool(name, value) => {
                        mlx_sys::mlx_fast_cuda_kernel_config_add_template_arg_bool(
                            config,
                            name.as_ptr(),
                            value,
                        )
                    }
                };
            }
            let handles: Vec<_> = inputs.iter().map(|a| a.as_ptr()).collect();
            let input_vector = mlx_sys::mlx_vector_array_new_data(handles.as_ptr(), handles.len());
            let mut results_vector = mlx_sys::mlx_vector_array_new();
            if status == 0 {
                status = mlx_sys::mlx_fast_cuda_kernel_apply(
                    &mut results_vector,
                    self.handle,
                    input_vector,
                    config,
                    stream.as_ptr(),
                );
            }
            let mut results = Vec::with_capacity(outputs.len());
            if status == 0 && mlx_sys::mlx_vector_array_size(results_vector) == outputs.len() {
                for i in 0..outputs.len() {
                    let mut item = mlx_sys::mlx_array_new();
                    mlx_sys::mlx_vector_array_get(&mut item, results_vector, i);
                    results.push(Array::from_ptr(item));
                }
            }
            mlx_sys::mlx_vector_array_free(results_vector);
            mlx_sys::mlx_vector_array_free(input_vector);
            mlx_sys::mlx_fast_cuda_kernel_config_free(config);
            if results.len() == outputs.len() {
                Ok(results)
            } else {
                Err(Error::Invalid(format!(
                    "MLX refused the {} CUDA kernel call",
                    self.name
                )))
            }
        }
    }
}
