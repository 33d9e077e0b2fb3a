//! A mount outliving its process: [`TriggerFs::adopt`] takes over a FUSE connection a
//! predecessor left (through systemd's fd store or `execve`) without a second `FUSE_INIT` and
//! without unmounting; [`TriggerFs::hand_over`] parks the connection's requests and writes
//! what the successor needs; [`TriggerFs::leave_mounted`] lets the process go without ending
//! the connection.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{read, write, OpenFile};
use crate::fs::FuseFs;
use crate::handover::{resend_or_abort, Resent};
use crate::{
    build_shared, fuse_config, FsError, MessageSink, MountOptions, TriggerFs, TriggerSpec,
};

impl TriggerFs {
    /// Serves the already initialised FUSE connection `device`, mounted at
    /// `opts.mountpoint` by a predecessor, with the inode numbers and handles its session
    /// file names, then asks the kernel to send again what the predecessor had read but not
    /// answered. Where that cannot be done (no session file, the kernel refuses the resend),
    /// the connection is aborted, so that its writers fail rather than hang, and
    /// [`FsError::Adopt`] says why: mounting again on the same place then works.
    pub fn adopt(
        opts: MountOptions,
        specs: Vec<TriggerSpec>,
        sink: Arc<dyn MessageSink>,
        device: OwnedFd,
    ) -> Result<Self, FsError> {
        // Not canonicalize(): a stat of the mount would wait for this very process.
        let mountpoint = std::path::absolute(&opts.mountpoint).map_err(|e| FsError::Mount {
            path: opts.mountpoint.clone(),
            source: e,
        })?;
        let refuse = |reason: String| FsError::Adopt {
            path: mountpoint.clone(),
            reason,
        };
        let session_file = crate::handover::SessionFile::new(opts.session_file.clone());
        let Some(session) = session_file.load() else {
            // Without the predecessor's numbers the kernel's node ids would name the wrong
            // files: end the connection instead.
            abort(&mountpoint);
            return Err(refuse(format!(
                "no session file {}: connection aborted",
                session_file.path().display()
            )));
        };
        let shared = build_shared(&opts, &specs, sink, session.inodes, true)?;
        shared.next_fh.fetch_max(session.next_fh, Ordering::Relaxed);
        {
            let mut handles = write(&shared.handles);
            for kept in session.handles {
                let restored = shared
                    .triggers
                    .get(&kept.trigger)
                    .and_then(|t| OpenFile::restore(t, kept.partial));
                match restored {
                    Some(file) => {
                        handles.insert(kept.fh, Arc::new(file));
                    }
                    None => tracing::warn!(trigger = kept.trigger, "kept handle dropped"),
                }
            }
        }
        // The handles are ours now: a later crash must not bring their partial lines back.
        shared.save_session(&read(&shared.tree), Vec::new());
        let kept = device.try_clone().map_err(|e| refuse(e.to_string()))?;
        let session = fuser::Session::from_initialized_fd(
            FuseFs(shared.clone()),
            device,
            fuser::SessionACL::All,
            fuse_config(opts.threads),
        );
        let notifier = session.notifier();
        let session = session.spawn().map_err(|e| refuse(e.to_string()))?;
        let fs = TriggerFs {
            shared,
            session: Some(session),
            notifier,
            mountpoint: mountpoint.clone(),
            device: kept,
        };
        match resend_or_abort(fs.device.as_fd(), &mountpoint, opts.simulate_no_resend) {
            Ok(Resent::Resent) => Ok(fs),
            Ok(Resent::Aborted) => Err(refuse(
                "kernel without FUSE_NOTIFY_RESEND: connection aborted".into(),
            )),
            Err(e) => {
                abort(&mountpoint);
                Err(refuse(format!("resend failed ({e}): connection aborted")))
            }
        }
    }

    /// The connection's /dev/fuse descriptor, to keep for a successor.
    pub fn device(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }

    /// Prepares the successor's take-over: from now on every state-changing request parks
    /// (the kernel keeps it; the successor gets it again), the ones in progress get up to
    /// `wait` to finish, and the open handles with their partial lines go into the session
    /// file. Returns whether every request in progress finished. Irreversible: the process is
    /// to be replaced.
    pub fn hand_over(&self, wait: Duration) -> bool {
        let settled = self.shared.gate.close(wait);
        let tree = read(&self.shared.tree);
        let handles = read(&self.shared.handles)
            .iter()
            .map(|(&fh, file)| file.kept(fh))
            .collect();
        self.shared.save_session(&tree, handles);
        settled
    }

    /// Drops the handle without unmounting: the connection lives on in whoever holds its
    /// device (the fd store, the exec'd successor).
    pub fn leave_mounted(mut self) {
        if let Some(session) = self.session.take() {
            // Its drop would unmount; the FUSE threads end with the process.
            std::mem::forget(session);
        }
    }
}

/// Aborts the connection mounted at `mountpoint` (best effort, logged).
fn abort(mountpoint: &std::path::Path) {
    if let Err(e) = crate::handover::abort(mountpoint) {
        tracing::error!(mount = %mountpoint.display(), "cannot abort the FUSE connection: {e}");
    }
}
