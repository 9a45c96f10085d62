//! Which MLX device runs the model: the `--device gpu|cpu` choice shared by
//! every program, and the line they print about it at start-up.

use std::ffi::CStr;
use std::fmt;

use mlx_rs::{Device, DeviceType};

use crate::{Error, Result};

/// The user's device choice. `Auto` picks the GPU when MLX has one (Metal on
/// macOS, CUDA on Linux with the CUDA build of libmlx), else the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// GPU if available, else CPU.
    #[default]
    Auto,
    /// The GPU (Metal or CUDA); an error if MLX has none.
    Gpu,
    /// The CPU.
    Cpu,
}

/// The device that was selected, as reported at start-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectedDevice {
    /// `Gpu` or `Cpu`.
    pub kind: DeviceKind,
    /// "Metal", "CUDA" or "CPU".
    pub backend: &'static str,
    /// The hardware name MLX reports, when it reports one.
    pub name: Option<String>,
}

/// Where arrays are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Gpu,
    Cpu,
}

impl fmt::Display for SelectedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceKind::Gpu => "gpu",
            DeviceKind::Cpu => "cpu",
        };
        write!(f, "{kind} ({}", self.backend)?;
        if let Some(name) = &self.name {
            write!(f, ", {name}")?;
        }
        write!(f, ")")
    }
}

/// The version of the MLX library this process runs on (the libmlx the
/// loader found, which on Linux may be the CPU or the CUDA build), e.g. "0.32.4".
pub fn mlx_version() -> String {
    // SAFETY: a string handle made, filled and freed here; its data is read
    // while it lives.
    unsafe {
        let mut text = mlx_sys::mlx_string_new();
        let version = if mlx_sys::mlx_version(&mut text) == 0 {
            let data = mlx_sys::mlx_string_data(text);
            (!data.is_null()).then(|| {
                std::ffi::CStr::from_ptr(data)
                    .to_string_lossy()
                    .into_owned()
            })
        } else {
            None
        };
        mlx_sys::mlx_string_free(text);
        version.unwrap_or_else(|| "unknown".to_string())
    }
}

/// True when the loaded libmlx has a usable GPU back end.
pub fn gpu_available() -> bool {
    crate::quant::ensure_mlx_error_handler();
    let mut available = false;
    // SAFETY: plain out-parameter call; the device handle is freed below.
    unsafe {
        let gpu = mlx_sys::mlx_device_new_type(mlx_sys::mlx_device_type__MLX_GPU, 0);
        let status = mlx_sys::mlx_device_is_available(&mut available, gpu);
        mlx_sys::mlx_device_free(gpu);
        status == 0 && available
    }
}

/// True when MLX's default device is a CUDA GPU, where a few operations
/// have narrower kernels than on the CPU or Metal.
pub fn default_is_cuda() -> bool {
    let on_gpu = mlx_rs::Device::try_default()
        .and_then(|d| d.get_type())
        .is_ok_and(|t| matches!(t, mlx_rs::DeviceType::Gpu));
    on_gpu && gpu_backend() == "CUDA"
}

fn gpu_backend() -> &'static str {
    let mut cuda = false;
    // SAFETY: plain out-parameter call.
    let status = unsafe { mlx_sys::mlx_cuda_is_available(&mut cuda) };
    if status == 0 && cuda { "CUDA" } else { "Metal" }
}

/// The hardware name of the GPU, from MLX's device info ("device_name").
fn gpu_name() -> Option<String> {
    // SAFETY: the info and device handles are created and freed here; the
    // string returned by MLX is copied before the info is freed.
    unsafe {
        let gpu = mlx_sys::mlx_device_new_type(mlx_sys::mlx_device_type__MLX_GPU, 0);
        let mut info = mlx_sys::mlx_device_info_new();
        let mut name = None;
        if mlx_sys::mlx_device_info_get(&mut info, gpu) == 0 {
            let key = c"device_name";
            let mut exists = false;
            let mut is_string = false;
            if mlx_sys::mlx_device_info_has_key(&mut exists, info, key.as_ptr()) == 0
                && exists
                && mlx_sys::mlx_device_info_is_string(&mut is_string, info, key.as_ptr()) == 0
                && is_string
            {
                let mut value: *const std::os::raw::c_char = std::ptr::null();
                if mlx_sys::mlx_device_info_get_string(&mut value, info, key.as_ptr()) == 0
                    && !value.is_null()
                {
                    name = Some(CStr::from_ptr(value).to_string_lossy().into_owned());
                }
            }
        }
        mlx_sys::mlx_device_info_free(info);
        mlx_sys::mlx_device_free(gpu);
        name
    }
}

/// Makes `choice` MLX's default device for this process and says which it is.
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice> {
    let use_gpu = match choice {
        DeviceChoice::Cpu => false,
        DeviceChoice::Auto => gpu_available(),
        DeviceChoice::Gpu => {
            if !gpu_available() {
                return Err(Error::Invalid(
                    "--device gpu: this MLX build has no GPU back end (Metal or CUDA). \
                     Use --device cpu, or on Linux set up the CUDA build with \
                     `python3 scripts/setup-mlx.py --backend cuda`."
                        .into(),
                ));
            }
            true
        }
    };
    if use_gpu {
        Device::set_default(&Device::new(DeviceType::Gpu, 0));
        Ok(SelectedDevice {
            kind: DeviceKind::Gpu,
            backend: gpu_backend(),
            name: gpu_name(),
        })
    } else {
        Device::set_default(&Device::new(DeviceType::Cpu, 0));
        Ok(SelectedDevice {
            kind: DeviceKind::Cpu,
            backend: "CPU",
            name: cpu_blas().map(|blas| format!("BLAS: {blas}")),
        })
    }
}

/// The optimized BLAS that MLX's CPU matrix products run on in this
/// process, when there is one: OpenBLAS, which `scripts/setup-mlx.py` links
/// on Linux where it is installed, ahead of the Netlib reference BLAS that
/// PyPI's libmlx brings (~1 GFLOP/s). Read from where `cblas_sgemm` (what
/// libmlx calls) resolves, past the set-up's guard (which makes concurrent
/// callers take turns), e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell
/// MAX_THREADS=64". `None` elsewhere (macOS: MLX uses Accelerate).
pub fn cpu_blas() -> Option<&'static str> {
    static BLAS: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BLAS.get_or_init(|| {
        // SAFETY: lookups of symbols by name in the loaded objects; `info`
        // is filled by dladdr; the config function, if found, takes nothing
        // and returns a static C string.
        unsafe {
            let mut sgemm = libc::dlsym(libc::RTLD_DEFAULT, c"cblas_sgemm".as_ptr());
            // The set-up's guard (scripts/blas_guard.c) comes first and
            // says which definition it calls on to.
            let guarded = libc::dlsym(libc::RTLD_DEFAULT, c"mlx_harmony_blas_guard_sgemm".as_ptr());
            if !guarded.is_null() {
                let guarded: extern "C" fn() -> *mut libc::c_void = std::mem::transmute(guarded);
                sgemm = guarded();
            }
            let mut info: libc::Dl_info = std::mem::zeroed();
            if sgemm.is_null() || libc::dladdr(sgemm, &mut info) == 0 || info.dli_fname.is_null() {
                return None;
            }
            let provider = CStr::from_ptr(info.dli_fname).to_string_lossy();
            if !provider.contains("openblas") {
                return None;
            }
            let config = libc::dlsym(libc::RTLD_DEFAULT, c"openblas_get_config".as_ptr());
            let text = if config.is_null() {
                std::ptr::null()
            } else {
                let config: extern "C" fn() -> *const std::ffi::c_char =
                    std::mem::transmute(config);
                config()
            };
            let config = if text.is_null() {
                String::new()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            };
            // Its own words, led by "OpenBLAS" (which recent builds write).
            let words: Vec<&str> = config
                .split_whitespace()
                .skip_while(|w| *w == "OpenBLAS")
                .collect();
            Some(
                ["OpenBLAS"]
                    .into_iter()
                    .chain(words)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }
    })
    .as_deref()
}

/// Waits until MLX has finished the work queued on this thread's stream
/// and on the default CPU stream. A pipelined loop leaves one step queued
/// when the sequence ends at a token it did not know was the last (an end
/// token, a stop string): the step runs on MLX's worker thread while the
/// caller goes on. A program calls this before it exits, so that the
/// process's exit (its libraries' static destructors: MLX's allocator,
/// OpenBLAS's buffers) never races that worker: it did, rarely, as
/// `malloc_consolidate(): unaligned fastbin chunk detected` in a one-shot
/// run on the CPU.
pub fn finish_queued_work() {
    let streams = [
        mlx_rs::Stream::thread_local_or_default(),
        mlx_rs::Stream::cpu(),
    ];
    for stream in &streams {
        // SAFETY: a plain call on a valid stream handle; a failure (no such
        // device) leaves nothing to wait for.
        let _ = unsafe { mlx_sys::mlx_synchronize(stream.as_ptr()) };
    }
}
