//! The object store port on a local directory: keys are relative paths. Lets the benchmark run our
//! compactor on the same files DuckDB and pyarrow read, with no emulator in the measurement.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use pipeline::ports::{ByteStream, MultipartUpload, ObjectInfo, ObjectStore, StoreError};

pub struct FsObjectStore {
    root: PathBuf,
}

impl FsObjectStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsObjectStore { root: root.into() }
    }
}

fn io(operation: &str, key: &str, error: std::io::Error) -> StoreError {
    StoreError::new(format!("{operation} {key}"), error.to_string())
}

fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().expect("keys have a folder"))?;
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, body)?;
    std::fs::rename(tmp, path)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for FsObjectStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        write_atomically(&self.root.join(key), &body).map_err(|e| io("put", key, e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        // Walk only the deepest folder the prefix names.
        let folder = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let start = self.root.join(folder);
        let mut files = Vec::new();
        if start.exists() {
            walk(&start, &mut files).map_err(|e| io("list", prefix, e))?;
        }
        let mut objects: Vec<ObjectInfo> = files
            .into_iter()
            .filter_map(|path| {
                let key = path.strip_prefix(&self.root).ok()?.to_str()?.to_string();
                let size = std::fs::metadata(&path).ok()?.len();
                key.starts_with(prefix).then_some(ObjectInfo { key, size })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        let body = std::fs::read(self.root.join(key)).map_err(|e| io("get", key, e))?;
        Ok(Box::pin(futures::stream::iter([Ok(Bytes::from(body))])))
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            std::fs::remove_file(self.root.join(key)).map_err(|e| io("delete", key, e))?;
        }
        Ok(())
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn MultipartUpload>, StoreError> {
        let path = self.root.join(key);
        std::fs::create_dir_all(path.parent().expect("keys have a folder"))
            .map_err(|e| io("upload", key, e))?;
        let tmp = path.with_extension("tmp-upload");
        let file = std::fs::File::create(&tmp).map_err(|e| io("upload", key, e))?;
        Ok(Box::new(FsUpload { file, tmp, path }))
    }
}

struct FsUpload {
    file: std::fs::File,
    tmp: PathBuf,
    path: PathBuf,
}

#[async_trait]
impl MultipartUpload for FsUpload {
    async fn upload_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        use std::io::Write as _;
        self.file
            .write_all(&part)
            .map_err(|e| io("upload part", &self.path.display().to_string(), e))
    }

    async fn complete(self: Box<Self>) -> Result<(), StoreError> {
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| io("complete", &self.path.display().to_string(), e))
    }

    async fn abort(self: Box<Self>) -> Result<(), StoreError> {
        let _ = std::fs::remove_file(&self.tmp);
        Ok(())
    }
}
