//! The C ABI for publishers (declared in `ipc/include/triggerd.h`): connect to a channel by
//! name, publish bytes, free the handle. Every function checks its pointers, never unwinds, and
//! reports failures as the negative `TRIGGERD_E*` codes below.

use crate::{IpcError, PublishError, Publisher};
use std::ffi::{c_char, c_int, CStr};
use std::time::Duration;

/// Success.
pub const TRIGGERD_OK: c_int = 0;
/// The channel is full; nothing was written, retry later ([`PublishError::WouldBlock`]).
pub const TRIGGERD_EWOULDBLOCK: c_int = -1;
/// The message is longer than the channel's maximum ([`PublishError::TooLarge`]).
pub const TRIGGERD_ETOOLARGE: c_int = -2;
/// No such channel: triggerd is not running, or has no such `[[channel]]`.
pub const TRIGGERD_ENOCHANNEL: c_int = -3;
/// The channel's owner, group and mode exclude this user.
pub const TRIGGERD_EACCES: c_int = -4;
/// Invalid argument: a null pointer, or a channel name that is not valid.
pub const TRIGGERD_EINVAL: c_int = -5;
/// The channel's region is corrupted, quarantined or incompatible.
pub const TRIGGERD_ECORRUPT: c_int = -6;
/// Every publisher lane of the channel is held by a live process.
pub const TRIGGERD_ENOLANE: c_int = -7;
/// A system call failed.
pub const TRIGGERD_EOS: c_int = -8;
/// triggerd removed the channel; free the handle and reconnect.
pub const TRIGGERD_ECLOSED: c_int = -9;

/// Opaque to C: `struct triggerd_publisher`.
pub struct TriggerdPublisher(Publisher);

fn connect_code(e: &IpcError) -> c_int {
    match e {
        IpcError::InvalidName { .. } | IpcError::InvalidSpec { .. } => TRIGGERD_EINVAL,
        IpcError::NoSuchChannel { .. } => TRIGGERD_ENOCHANNEL,
        IpcError::PermissionDenied { .. } => TRIGGERD_EACCES,
        IpcError::BadRegion { .. } | IpcError::Quarantined { .. } => TRIGGERD_ECORRUPT,
        IpcError::NoFreeLane { .. } => TRIGGERD_ENOLANE,
        IpcError::AlreadyRunning { .. } | IpcError::Os { .. } => TRIGGERD_EOS,
    }
}

fn publish_code(result: Result<(), PublishError>) -> c_int {
    match result {
        Ok(()) => TRIGGERD_OK,
        Err(PublishError::WouldBlock) => TRIGGERD_EWOULDBLOCK,
        Err(PublishError::TooLarge { .. }) => TRIGGERD_ETOOLARGE,
        Err(PublishError::Corrupt(_)) => TRIGGERD_ECORRUPT,
        Err(PublishError::Closed) => TRIGGERD_ECLOSED,
    }
}

/// Connects to `channel`; on success stores a handle in `*out` and returns `TRIGGERD_OK`.
///
/// # Safety
/// `channel` must be null or a NUL-terminated string; `out` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn triggerd_publisher_connect(
    channel: *const c_char,
    out: *mut *mut TriggerdPublisher,
) -> c_int {
    if channel.is_null() || out.is_null() {
        return TRIGGERD_EINVAL;
    }
    // SAFETY: the caller promises a NUL-terminated string (checked non-null above).
    let name = unsafe { CStr::from_ptr(channel) };
    let Ok(name) = name.to_str() else {
        return TRIGGERD_EINVAL;
    };
    match Publisher::connect(name) {
        Ok(publisher) => {
            let handle = Box::into_raw(Box::new(TriggerdPublisher(publisher)));
            // SAFETY: `out` is non-null and the caller promises it is valid for a write.
            unsafe { out.write(handle) };
            TRIGGERD_OK
        }
        Err(e) => connect_code(&e),
    }
}

/// Borrows the message and the publisher behind C pointers.
///
/// # Safety
/// `publisher` must be null or a live handle; `data` must be null (then `len` must be 0) or
/// valid for `len` bytes.
unsafe fn args<'a>(
    publisher: *mut TriggerdPublisher,
    data: *const u8,
    len: usize,
) -> Option<(&'a Publisher, &'a [u8])> {
    // SAFETY: the caller promises `publisher` is null or a live handle from connect.
    let publisher = unsafe { publisher.as_ref() }?;
    let msg = match (data.is_null(), len) {
        (true, 0) => &[][..],
        (true, _) => return None,
        // SAFETY: the caller promises `data` is valid for reads of `len` bytes.
        (false, _) => unsafe { std::slice::from_raw_parts(data, len) },
    };
    Some((&publisher.0, msg))
}

/// Publishes `len` bytes at `data`; `TRIGGERD_EWOULDBLOCK` if the channel is full.
///
/// # Safety
/// `publisher` is a live handle used by one thread at a time; `data` is valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn triggerd_publish(
    publisher: *mut TriggerdPublisher,
    data: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: forwarded caller promises.
    match unsafe { args(publisher, data, len) } {
        Some((p, msg)) => publish_code(p.publish(msg)),
        None => TRIGGERD_EINVAL,
    }
}

/// Like `triggerd_publish`, waiting up to `timeout_ms` milliseconds for space.
///
/// # Safety
/// As for `triggerd_publish`.
#[no_mangle]
pub unsafe extern "C" fn triggerd_publish_timeout(
    publisher: *mut TriggerdPublisher,
    data: *const u8,
    len: usize,
    timeout_ms: u64,
) -> c_int {
    // SAFETY: forwarded caller promises.
    match unsafe { args(publisher, data, len) } {
        Some((p, msg)) => publish_code(p.publish_timeout(msg, Duration::from_millis(timeout_ms))),
        None => TRIGGERD_EINVAL,
    }
}

/// Releases the publisher's lane and frees the handle (null is ignored).
///
/// # Safety
/// `publisher` is null or a handle from `triggerd_publisher_connect`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn triggerd_publisher_free(publisher: *mut TriggerdPublisher) {
    if !publisher.is_null() {
        // SAFETY: the caller promises the handle came from Box::into_raw in connect and is
        // freed once.
        drop(unsafe { Box::from_raw(publisher) });
    }
}

/// A static, NUL-terminated description of a return code.
#[no_mangle]
pub extern "C" fn triggerd_strerror(code: c_int) -> *const c_char {
    let text: &'static CStr = match code {
        TRIGGERD_OK => c"success",
        TRIGGERD_EWOULDBLOCK => c"channel full (would block)",
        TRIGGERD_ETOOLARGE => c"message too large for the channel",
        TRIGGERD_ENOCHANNEL => c"no such channel (is triggerd running with this [[channel]]?)",
        TRIGGERD_EACCES => c"permission denied by the channel's owner/group/mode",
        TRIGGERD_EINVAL => c"invalid argument",
        TRIGGERD_ECORRUPT => c"channel region corrupted or incompatible",
        TRIGGERD_ENOLANE => c"all publisher lanes of the channel are in use",
        TRIGGERD_EOS => c"system call failed",
        TRIGGERD_ECLOSED => c"channel closed by triggerd (reconnect)",
        _ => c"unknown error",
    };
    text.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Channel, ChannelSpec};

    #[test]
    fn ffi_connect_publish_free_and_reject_bad_pointers() {
        let name = format!("ffi-{}", std::process::id());
        let channel = Channel::create(&ChannelSpec::new(name.as_str())).unwrap();
        let cname = std::ffi::CString::new(name).unwrap();
        let mut handle = std::ptr::null_mut();
        // SAFETY: valid C string and out pointer.
        let connected = unsafe { triggerd_publisher_connect(cname.as_ptr(), &mut handle) };
        assert_eq!(connected, TRIGGERD_OK);
        // SAFETY: live handle and a 5-byte buffer.
        let published = unsafe { triggerd_publish(handle, b"hello".as_ptr(), 5) };
        assert_eq!(published, TRIGGERD_OK);
        // SAFETY: null data with a non-zero length is rejected before any read.
        let null_data = unsafe { triggerd_publish(handle, std::ptr::null(), 5) };
        assert_eq!(null_data, TRIGGERD_EINVAL);
        // SAFETY: a null handle is rejected.
        let null_handle = unsafe { triggerd_publish(std::ptr::null_mut(), b"x".as_ptr(), 1) };
        assert_eq!(null_handle, TRIGGERD_EINVAL);
        // SAFETY: handle from connect, freed once.
        unsafe { triggerd_publisher_free(handle) };
        let missing = c"no-such-channel-anywhere";
        // SAFETY: valid C string and out pointer.
        let absent = unsafe { triggerd_publisher_connect(missing.as_ptr(), &mut handle) };
        assert_eq!(absent, TRIGGERD_ENOCHANNEL);
        // SAFETY: triggerd_strerror returns a static NUL-terminated string.
        let text = unsafe { CStr::from_ptr(triggerd_strerror(TRIGGERD_EACCES)) };
        assert!(text.to_str().unwrap().contains("permission"));
        let mut got = Vec::new();
        let stopper = channel.stopper();
        channel
            .run(|m| {
                got.push(m.to_vec());
                stopper.stop();
            })
            .unwrap();
        assert_eq!(got, vec![b"hello".to_vec()]);
    }
}
