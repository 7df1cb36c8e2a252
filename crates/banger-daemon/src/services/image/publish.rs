//! The one publication step every path that stores an image or kernel takes: under the
//! publication lock, re-check the name, rename the staging dir into place, upsert the row
//! (removing the dir again when the row cannot be written).

use std::path::{Path, PathBuf};

use banger_store::{ImageRecord, KernelRecord, Store};

use super::{ImageError, ImageService, Kind};
use crate::services::support::{random_suffix, with_store};

/// A staging dir, removed when dropped unless published.
#[derive(Debug)]
pub(super) struct Staging(Option<PathBuf>);

impl Staging {
    /// A fresh `.staging-*` dir name under `parent` (not created yet).
    pub(super) fn under(parent: &Path) -> Self {
        Staging(Some(parent.join(format!(".staging-{}", random_suffix()))))
    }

    /// Guards an existing path (e.g. a tmpfs flatten dir).
    pub(super) fn guard(path: PathBuf) -> Self {
        Staging(Some(path))
    }

    /// Its path.
    pub(super) fn path(&self) -> PathBuf {
        self.0.clone().unwrap_or_default()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs_err::remove_dir_all(p);
        }
    }
}

/// What is published.
#[derive(Debug)]
pub(super) enum Record {
    /// An image row.
    Image(ImageRecord),
    /// A kernel row.
    Kernel(KernelRecord),
}

impl Record {
    fn kind(&self) -> Kind {
        match self {
            Record::Image(_) => Kind::Image,
            Record::Kernel(_) => Kind::Kernel,
        }
    }

    fn name(&self) -> &str {
        match self {
            Record::Image(i) => &i.name,
            Record::Kernel(k) => &k.name,
        }
    }
}

/// What may already be stored under the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Existing {
    /// Nothing: a row by that name fails the publication.
    Refuse,
    /// Anything: it is replaced (a rebuilt default image or distro kernel).
    Replace,
    /// Exactly the unmanaged image with this id (a promotion).
    Unmanaged(String),
}

impl ImageService {
    /// Publishes `record`: re-checks the name against `existing`, renames `staged` (when
    /// given) to `final_dir` and upserts the row.
    pub(super) async fn publish(
        &self,
        record: Record,
        staged: Option<(&mut Staging, &Path)>,
        existing: Existing,
    ) -> Result<(), ImageError> {
        let _publish = self.publication.lock().await;
        let (kind, name) = (record.kind(), record.name().to_owned());
        let key = name.clone();
        let current: Option<(String, bool)> = with_store(&self.infra.store, move |s: &Store| {
            Ok(match kind {
                Kind::Image => s.get_image(&key)?.map(|i| (i.id, i.managed)),
                Kind::Kernel => s.get_kernel(&key)?.map(|k| (k.id, k.managed)),
            })
        })
        .await?;
        match (&existing, current) {
            (_, None) | (Existing::Replace, Some(_)) => {}
            (Existing::Unmanaged(id), Some((cur, false))) if *id == cur => {}
            (Existing::Unmanaged(_), Some(_)) => {
                return Err(ImageError::ChangedWhilePromoted(name));
            }
            (Existing::Refuse, Some(_)) => return Err(ImageError::NameTaken(kind, name)),
        }
        let final_dir = match staged {
            Some((staging, final_dir)) => {
                let Some(dir) = staging.0.take() else {
                    return Err(ImageError::Publish(
                        kind,
                        std::io::Error::other("nothing staged"),
                    ));
                };
                let _ = fs_err::remove_dir_all(final_dir);
                if let Err(e) = fs_err::rename(&dir, final_dir) {
                    staging.0 = Some(dir);
                    return Err(ImageError::Publish(kind, e));
                }
                Some(final_dir.to_owned())
            }
            None => None,
        };
        let replace = existing == Existing::Replace;
        let stored = with_store(&self.infra.store, move |s: &Store| match &record {
            Record::Image(i) => {
                if replace
                    && let Some(old) = s.get_image(&i.name)?
                    && old.id != i.id
                {
                    s.delete_image_templates(&old.id)?;
                    s.delete_image(&old.id)?;
                }
                s.upsert_image(i)
            }
            Record::Kernel(k) => s.upsert_kernel(k),
        })
        .await;
        if let Err(e) = stored {
            if let Some(dir) = final_dir {
                let _ = fs_err::remove_dir_all(dir);
            }
            return Err(e.into());
        }
        Ok(())
    }
}
