//! Getting weights into memory quickly and keeping them there: prewarming
//! the operating system's file cache before MLX maps the files, and wiring
//! the weights' memory (`--mlock`) where the back end can.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{Error, Result};

/// What a prewarm read.
#[derive(Clone, Debug, PartialEq)]
pub struct Prewarmed {
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
}

/// The weight files of a model path: a GGUF file, or a folder's
/// `*.safetensors` / `*.gguf`.
pub fn weight_files(model: &Path) -> Vec<PathBuf> {
    if model.is_file() {
        return vec![model.to_path_buf()];
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(model)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "safetensors" || e == "gguf")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The total size of the weight files of a model path, in bytes.
pub fn weight_bytes(model: &Path) -> u64 {
    weight_files(model)
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Reads every weight file once, front to back, so that the loader then
/// finds them in the page cache (`--prewarm-cache`). Not the default: MLX
/// already reads tensors with parallel large reads, so on the disks
/// measured this pass only adds time; it may still help where first reads
/// are slow and sequential ones are not (network or spinning disks).
pub fn prewarm(model: &Path) -> Result<Prewarmed> {
    let start = Instant::now();
    let mut buffer = vec![0u8; 8 << 20];
    let mut bytes = 0u64;
    let files = weight_files(model);
    for file in &files {
        let mut reader = std::fs::File::open(file).map_err(|source| Error::Io {
            path: file.clone(),
            source,
        })?;
        loop {
            let n = reader.read(&mut buffer).map_err(|source| Error::Io {
                path: file.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
        }
    }
    Ok(Prewarmed {
        files: files.len(),
        bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// What `--mlock` achieved.
#[derive(Clone, Debug, PartialEq)]
pub enum Wired {
    /// Metal: MLX's wired-memory limit now covers the weights.
    MetalWiredLimit { bytes: usize },
    /// CPU: the process's memory is locked in RAM (`mlockall`).
    Locked,
    /// Nothing to do or nothing possible; says why.
    NotSupported(String),
}

impl std::fmt::Display for Wired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wired::MetalWiredLimit { bytes } => write!(
                f,
                "mlock: Metal wired-memory limit set to {:.2} GB",
                *bytes as f64 / 1e9
            ),
            Wired::Locked => write!(f, "mlock: process memory locked in RAM (mlockall)"),
            Wired::NotSupported(why) => write!(f, "mlock: {why}"),
        }
    }
}

fn metal_available() -> bool {
    let mut available = false;
    // SAFETY: plain out-parameter call.
    let status = unsafe { mlx_sys::mlx_metal_is_available(&mut available) };
    status == 0 && available
}

/// Metal's recommended working set size, from MLX's device info.
fn metal_working_set() -> Option<usize> {
    // SAFETY: handles created and freed here; a plain size is read out.
    unsafe {
        let gpu = mlx_sys::mlx_device_new_type(mlx_sys::mlx_device_type__MLX_GPU, 0);
        let mut info = mlx_sys::mlx_device_info_new();
        let mut size = None;
        if mlx_sys::mlx_device_info_get(&mut info, gpu) == 0 {
            let key = c"max_recommended_working_set_size";
            let mut exists = false;
            let mut value = 0usize;
            if mlx_sys::mlx_device_info_has_key(&mut exists, info, key.as_ptr()) == 0
                && exists
                && mlx_sys::mlx_device_info_get_size(&mut value, info, key.as_ptr()) == 0
            {
                size = Some(value);
            }
        }
        mlx_sys::mlx_device_info_free(info);
        mlx_sys::mlx_device_free(gpu);
        size
    }
}

/// The macOS version (`sw_vers -productVersion`), `None` elsewhere.
fn macos_version() -> Option<String> {
    if !cfg!(target_os = "macos") {
        return None;
    }
    let out = std::process::Command::new("sw_vers")
        .arg("-productVersion")
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !version.is_empty()).then_some(version)
}

/// Whether MLX's Metal wired limit takes effect on this macOS version (15+).
fn wired_limit_supported(version: &str) -> bool {
    version
        .split('.')
        .next()
        .and_then(|major| major.parse::<u32>().ok())
        .is_some_and(|major| major >= 15)
}

/// Keeps `weight_bytes` of model weights resident: on Metal by raising MLX's
/// wired limit (the weights must fit in 90% of the GPU's recommended working
/// set); on the CPU back end by locking the process's pages; on CUDA there
/// is nothing to do (weights live in GPU memory, which is never paged out).
pub fn wire_weights(weight_bytes: usize, on_gpu: bool) -> Result<Wired> {
    if on_gpu && metal_available() {
        // MLX keeps wired memory through Metal residency sets, which macOS
        // has from version 15; before, setting the limit does nothing.
        if let Some(version) = macos_version()
            && !wired_limit_supported(&version)
        {
            return Ok(Wired::NotSupported(format!(
                "Metal's wired-memory limit needs macOS 15 or newer (residency sets); on macOS \
                 {version} the weights stay pageable"
            )));
        }
        let Some(working_set) = metal_working_set() else {
            return Ok(Wired::NotSupported(
                "MLX did not report Metal's working-set size; memory left unwired".into(),
            ));
        };
        let cap = working_set / 10 * 9;
        if weight_bytes > cap {
            return Err(Error::Invalid(format!(
                "--mlock: the weights ({:.2} GB) exceed 90% of Metal's recommended working set ({:.2} GB); run without --mlock or use a smaller model",
                weight_bytes as f64 / 1e9,
                working_set as f64 / 1e9
            )));
        }
        let mut previous = 0usize;
        // SAFETY: plain out-parameter call.
        let status = unsafe { mlx_sys::mlx_set_wired_limit(&mut previous, weight_bytes) };
        if status != 0 {
            return Err(Error::Invalid(
                "--mlock: MLX refused the wired-memory limit".into(),
            ));
        }
        return Ok(Wired::MetalWiredLimit {
            bytes: weight_bytes,
        });
    }
    if on_gpu {
        return Ok(Wired::NotSupported(
            "on CUDA the weights live in GPU memory, which is never paged out; nothing to lock"
                .into(),
        ));
    }
    lock_process_memory()
}

#[cfg(unix)]
fn lock_process_memory() -> Result<Wired> {
    // SAFETY: mlockall takes flags only.
    let status = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if status == 0 {
        Ok(Wired::Locked)
    } else {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ENOSYS) {
            // macOS has no mlockall: no limit to raise.
            return Err(Error::Invalid(
                "--mlock: this system cannot lock a whole process's memory (mlockall; macOS \
                 has none); on a Mac run on the GPU (the default), where --mlock sets Metal's \
                 wired-memory limit, or run without --mlock"
                    .into(),
            ));
        }
        Err(Error::Invalid(format!(
            "--mlock: cannot lock memory ({error}); raise the locked-memory limit (ulimit -l, or memlock in /etc/security/limits.conf) or run without --mlock"
        )))
    }
}

#[cfg(not(unix))]
fn lock_process_memory() -> Result<Wired> {
    Ok(Wired::NotSupported(
        "memory locking is not available on this system; memory left pageable".into(),
    ))
}

/// How to open a model for generation; the default prewarms nothing and
/// wires nothing.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    pub hub: crate::hub::HubOptions,
    /// Read the weight files once before loading. Off by default: MLX reads
    /// the tensors in parallel itself, and the extra pass measured slower
    /// with the page cache cold and warm (docs/PERFORMANCE.md, "Model load time").
    pub prewarm: bool,
    /// Keep the weights resident (see [`wire_weights`]).
    pub mlock: bool,
    /// Whether MLX's default device is the GPU (for `mlock`).
    pub on_gpu: bool,
}

/// Resolves `spec` (a path or a Hugging Face id), prewarms and loads it, and
/// wires its memory when asked; `on_note` hears what was done, for the
/// programs to show with `--verbose`.
pub fn open(
    spec: &str,
    options: &LoadOptions,
    mut on_note: impl FnMut(&str),
) -> Result<(crate::generate::TokenGenerator, PathBuf)> {
    let path = crate::hub::resolve_model(spec, &options.hub)?;
    if options.prewarm {
        let done = prewarm(&path)?;
        on_note(&format!(
            "prewarm: read {} file(s), {:.2} GB in {:.2} s",
            done.files,
            done.bytes as f64 / 1e9,
            done.seconds
        ));
    }
    let start = Instant::now();
    let generator = crate::generate::TokenGenerator::load(&path)?;
    on_note(&format!(
        "loaded {} in {:.2} s",
        path.display(),
        start.elapsed().as_secs_f64()
    ));
    if options.mlock {
        let wired = wire_weights(weight_bytes(&path) as usize, options.on_gpu)?;
        on_note(&wired.to_string());
    }
    Ok((generator, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wired_limit_needs_macos_15() {
        assert!(!wired_limit_supported("14.7.1"));
        assert!(!wired_limit_supported("13.0"));
        assert!(wired_limit_supported("15.0"));
        assert!(wired_limit_supported("26.1"));
        assert!(!wired_limit_supported("unknown"));
    }
}
