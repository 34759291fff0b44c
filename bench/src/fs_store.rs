//! The object store port on a local directory: keys are relative paths. Lets the benchmark run our
//! compactor on the same files DuckDB and pyarrow read, with no emulator in the measurement.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use pipeline::ports::{
    ByteStream, ConditionalStore, Folder, MultipartUpload, ObjectInfo, ObjectStore, Precondition,
    StoreError,
};

pub struct FsObjectStore {
    root: PathBuf,
    /// Makes each conditional operation's check and write one step, within this process.
    conditional: std::sync::Mutex<()>,
}

impl FsObjectStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsObjectStore {
            root: root.into(),
            conditional: std::sync::Mutex::new(()),
        }
    }

    fn tagged(&self, key: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        match std::fs::read(self.root.join(key)) {
            Ok(body) => {
                let etag = pipeline::layout::content_digest(&body);
                Ok(Some((Bytes::from(body), etag)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("get", key, e)),
        }
    }
}

#[async_trait]
impl ConditionalStore for FsObjectStore {
    async fn put_if(
        &self,
        key: &str,
        body: Bytes,
        precondition: Precondition<'_>,
    ) -> Result<Option<String>, StoreError> {
        let _one_at_a_time = self.conditional.lock().unwrap();
        let current = self.tagged(key)?.map(|(_, etag)| etag);
        let holds = match precondition {
            Precondition::Absent => current.is_none(),
            Precondition::Matches(wanted) => current.as_deref() == Some(wanted),
        };
        if !holds {
            return Ok(None);
        }
        write_atomically(&self.root.join(key), &body).map_err(|e| io("put", key, e))?;
        Ok(Some(pipeline::layout::content_digest(&body)))
    }

    async fn get_tagged(&self, key: &str) -> Result<Option<(Bytes, String)>, StoreError> {
        self.tagged(key)
    }

    async fn delete_if_match(&self, key: &str, etag: &str) -> Result<bool, StoreError> {
        let _one_at_a_time = self.conditional.lock().unwrap();
        if self
            .tagged(key)?
            .is_some_and(|(_, current)| current == etag)
        {
            std::fs::remove_file(self.root.join(key)).map_err(|e| io("delete", key, e))?;
            return Ok(true);
        }
        Ok(false)
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

    async fn list_folder(&self, prefix: &str) -> Result<Folder, StoreError> {
        if !prefix.ends_with('/') {
            return Ok(Folder::of(prefix, self.list(prefix).await?));
        }
        // A folder is a directory here: one read of it, as S3 answers with a delimiter.
        let mut folder = Folder::default();
        let entries = match std::fs::read_dir(self.root.join(prefix)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(folder),
            Err(e) => return Err(io("list", prefix, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io("list", prefix, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let kind = entry.file_type().map_err(|e| io("list", prefix, e))?;
            if kind.is_dir() {
                folder.folders.push(format!("{prefix}{name}/"));
            } else {
                let size = entry.metadata().map_err(|e| io("list", prefix, e))?.len();
                let key = format!("{prefix}{name}");
                folder.objects.push(ObjectInfo { key, size });
            }
        }
        folder.objects.sort_by(|a, b| a.key.cmp(&b.key));
        folder.folders.sort();
        Ok(folder)
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
