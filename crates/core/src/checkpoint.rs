//! Reading a model folder: `config.json` and its safetensors weights, single
//! file or sharded with `model.safetensors.index.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use mlx_rs::Array;

use crate::{Error, Result};

/// A model folder's configuration and tensors, by their checkpoint names.
pub struct Checkpoint {
    pub dir: PathBuf,
    /// `config.json`, as written.
    pub config: serde_json::Value,
    pub tensors: HashMap<String, Array>,
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|err| Error::Checkpoint {
        path: path.to_owned(),
        message: format!("not valid JSON: {err}"),
    })
}

/// The safetensors files of a folder: the shards named by the index, else
/// `model.safetensors`, else every `*.safetensors` in name order.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json = read_json(&index)?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Checkpoint {
                path: index.clone(),
                message: "has no \"weight_map\" object".into(),
            })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|file| file.as_str())
            .map(|file| dir.join(file))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Checkpoint {
            path: dir.to_owned(),
            message: "no *.safetensors weights in this folder".into(),
        });
    }
    Ok(files)
}

impl Checkpoint {
    /// Opens a model folder. MLX maps the tensors lazily: nothing is read
    /// from disk until an array is first evaluated.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        let config = read_json(&dir.join("config.json"))?;
        let mut tensors = HashMap::new();
        for file in weight_files(&dir)? {
            if !file.is_file() {
                return Err(Error::Checkpoint {
                    path: file,
                    message: "named by the index but missing".into(),
                });
            }
            let loaded = Array::load_safetensors(&file).map_err(|err| Error::Checkpoint {
                path: file.clone(),
                message: format!("cannot load safetensors: {err}"),
            })?;
            tensors.extend(loaded);
        }
        Ok(Checkpoint {
            dir,
            config,
            tensors,
        })
    }

    /// Removes and returns a tensor, or says which one is missing.
    pub fn take(&mut self, name: &str) -> Result<Array> {
        self.tensors.remove(name).ok_or_else(|| Error::Checkpoint {
            path: self.dir.clone(),
            message: format!("missing tensor {name:?}"),
        })
    }

    /// Like [`Checkpoint::take`], and checks the shape.
    pub fn take_shaped(&mut self, name: &str, shape: &[i32]) -> Result<Array> {
        let array = self.take(name)?;
        if array.shape() != shape {
            return Err(Error::Checkpoint {
                path: self.dir.clone(),
                message: format!(
                    "tensor {name:?} has shape {:?}, expected {shape:?}",
                    array.shape()
                ),
            });
        }
        Ok(array)
    }
}
