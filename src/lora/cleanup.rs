//! Removing an adapter's directory after an unload, confined to that
//! directory.

use std::path::Path;

/// Removes an adapter's directory: that directory and what is in it,
/// nothing above it, and never a directory too close to the root to be an
/// adapter's own.
pub(super) fn remove_adapter_dir(dir: &Path) -> String {
    let depth = dir
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    if !dir.is_absolute() || depth < 2 {
        return format!(
            "not removed: {} is too close to the root to be an adapter directory",
            dir.display()
        );
    }
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return format!("not removed: {} is a symbolic link", dir.display());
        }
        Err(_) => return format!("nothing removed: {} does not exist", dir.display()),
        Ok(_) => {}
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => format!("removed {}", dir.display()),
        Err(e) => format!("could not remove {}: {e}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleanup_is_confined() {
        assert!(remove_adapter_dir(Path::new("/")).starts_with("not removed"));
        assert!(remove_adapter_dir(Path::new("/models")).starts_with("not removed"));
        let dir = std::env::temp_dir()
            .join(format!("mi-lora-{}", std::process::id()))
            .join("adapter");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/adapter_model.safetensors"), b"x").unwrap();
        assert!(remove_adapter_dir(&dir).starts_with("removed"));
        assert!(!dir.exists());
        assert!(dir.parent().unwrap().exists(), "the parent stays");
    }
}
