//! How the ABI grows, enforced by code: the frozen size of every struct at every minor
//! version, and the one routine that reads a struct built by a peer of another minor.
//!
//! # The versioning promise
//!
//! Within ABI major 1, a struct only ever grows at its end, and each minor version's
//! size of each struct is frozen forever in [`Versioned::SIZES`] (and in the header's
//! `RECEPTOR_*_V1_n_SIZE` constants, computed from field ends, never from `sizeof`).
//! A golden test pins every size and offset as literal numbers per minor, so a field
//! inserted in the middle, or a field added to a released minor, fails the build's
//! tests. Consequently:
//!
//! * a host of minor *n* loads plugins built for every minor up to *n* and behaves with
//!   them as the host of their minor did;
//! * a plugin of minor *n* works with a host of an older minor: fields the host did not
//!   fill in read as their defaults (null, `None`, 0, the empty string);
//! * a plugin declaring a newer minor than the host still loads (the fields the host
//!   does not know are ignored), with a warning naming both versions.
//!
//! Every struct crossing the boundary is read with [`read_prefix`], which copies exactly
//! the whole minor versions the peer's `struct_size` covers and fills the rest with
//! defaults, and every out-struct is written with [`write_prefix`].

use crate::abi;

/// The end of a field: its offset plus its size. Frozen sizes are field ends, so that
/// padding at the end of a struct never changes them.
#[macro_export]
macro_rules! field_end {
    ($ty:ty, $field:ident) => {{
        let probe = ::std::mem::MaybeUninit::<$ty>::uninit();
        const fn size_of_pointee<T>(_: *const T) -> usize {
            ::std::mem::size_of::<T>()
        }
        // SAFETY: only the field's address is computed; nothing is read.
        let field = unsafe { ::std::ptr::addr_of!((*probe.as_ptr()).$field) };
        ::std::mem::offset_of!($ty, $field) + size_of_pointee(field)
    }};
}

/// A struct of the ABI: `#[repr(C)]`, starting with `struct_size: usize`, growing only
/// at its end.
///
/// # Safety
/// An implementor is `#[repr(C)]`, its first field is `struct_size: usize`, every field
/// is an integer, a raw pointer, an `Option` of an `extern "C"` function or a struct of
/// such (so all-zero bytes are a valid value: null, `None`, 0), and `SIZES` holds, for
/// each minor version from 1.0 on, the end of the last field that minor has.
pub unsafe trait Versioned: Copy {
    /// Its name in the C header.
    const C_NAME: &'static str;
    /// `SIZES[m]`: its size at ABI 1.`m` (for every minor up to [`abi::ABI_MINOR`]).
    const SIZES: &'static [usize];

    /// The least `struct_size` accepted: its size at 1.0.
    fn min_size() -> usize {
        Self::SIZES[0]
    }

    /// Its size at the current minor.
    fn current_size() -> usize {
        Self::SIZES[Self::SIZES.len() - 1]
    }

    /// The oldest minor whose size `struct_size` covers whole, if any.
    fn minor_covered(struct_size: usize) -> Option<u32> {
        Self::SIZES
            .iter()
            .rposition(|&s| struct_size >= s)
            .and_then(|m| u32::try_from(m).ok())
    }
}

/// Why a struct from a peer cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// The pointer is null.
    Null {
        /// The struct's C name.
        what: &'static str,
    },
    /// The peer's struct is smaller than the struct was at ABI 1.0.
    TooSmall {
        /// The struct's C name.
        what: &'static str,
        /// The peer's `struct_size`.
        size: usize,
        /// The 1.0 size.
        min: usize,
    },
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::Null { what } => write!(f, "{what} is null"),
            LayoutError::TooSmall { what, size, min } => {
                write!(f, "{what} of {size} bytes, ABI 1.0 needs at least {min}")
            }
        }
    }
}

impl std::error::Error for LayoutError {}

/// Reads a struct filled in by a peer of any minor: copies the whole minor versions its
/// `struct_size` covers, leaves every later field at its default (zero: null, `None`, 0,
/// the empty string) and ignores what a newer peer appended. The result's
/// `struct_size` is the peer's, so [`abi::covers`] still tells what the peer sent.
///
/// # Safety
/// `ptr` is null or points to a struct whose first `struct_size` bytes are readable and
/// laid out as `T`'s first bytes.
pub unsafe fn read_prefix<T: Versioned>(ptr: *const T) -> Result<T, LayoutError> {
    if ptr.is_null() {
        return Err(LayoutError::Null { what: T::C_NAME });
    }
    // SAFETY: every ABI struct starts with struct_size (trait contract), and the caller
    // guarantees at least that many readable bytes.
    let size = unsafe { ptr.cast::<usize>().read_unaligned() };
    let Some(minor) = T::minor_covered(size) else {
        return Err(LayoutError::TooSmall {
            what: T::C_NAME,
            size,
            min: T::min_size(),
        });
    };
    let n = T::SIZES[minor as usize];
    // SAFETY: all-zero bytes are a valid T (trait contract).
    let mut out: T = unsafe { std::mem::zeroed() };
    // SAFETY: `n <= size` bytes are readable at ptr and fit in `out` (n is one of T's
    // frozen sizes, at most size_of::<T>()); they are whole fields of the same layout.
    unsafe {
        std::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            std::ptr::addr_of_mut!(out).cast::<u8>(),
            n,
        );
    }
    // SAFETY: struct_size is the first field.
    unsafe { std::ptr::addr_of_mut!(out).cast::<usize>().write(size) };
    Ok(out)
}

/// Writes `value` into an out-struct allocated by a peer whose `struct_size` (already
/// set in `*dst`) may be smaller or larger than `T`: only the whole minor versions it
/// covers are written, and `struct_size` is left as the peer set it.
///
/// # Safety
/// `dst` is null or points to a writable struct of at least its `struct_size` bytes,
/// laid out as `T`'s first bytes.
pub unsafe fn write_prefix<T: Versioned>(dst: *mut T, value: &T) -> Result<(), LayoutError> {
    if dst.is_null() {
        return Err(LayoutError::Null { what: T::C_NAME });
    }
    // SAFETY: the peer set struct_size, the first field.
    let size = unsafe { dst.cast::<usize>().read_unaligned() };
    let Some(minor) = T::minor_covered(size) else {
        return Err(LayoutError::TooSmall {
            what: T::C_NAME,
            size,
            min: T::min_size(),
        });
    };
    let start = std::mem::size_of::<usize>();
    let n = T::SIZES[minor as usize];
    // Both start inside their structs (start < min_size <= size).
    let src = (value as *const T).cast::<u8>().wrapping_add(start);
    let dst = dst.cast::<u8>().wrapping_add(start);
    // SAFETY: bytes start..n of dst are writable (n <= size) and of the same layout as
    // value's; struct_size (bytes 0..start) is not touched.
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, n - start);
    }
    Ok(())
}

macro_rules! versioned {
    ($($ty:ident => $c:literal [$($last:ident),+ $(,)?];)*) => {
        $(
            // SAFETY: the struct is #[repr(C)], starts with struct_size, has only
            // integer, pointer and Option<extern fn> fields, and the listed fields are
            // the last field of each minor, in order.
            unsafe impl Versioned for abi::$ty {
                const C_NAME: &'static str = $c;
                const SIZES: &'static [usize] = &[$(field_end!(abi::$ty, $last)),+];
            }
        )*
    };
}

// The last field of each minor (1.0, 1.1, 1.2, ...). Append one per new minor; never
// change an existing entry.
versioned! {
    HostApi => "ReceptorHostApi" [log, log, config_list_item];
    ErrorSink => "ReceptorErrorSink" [set, set, set];
    BackendHost => "ReceptorBackendHost" [release, connection_tls, connection_tls];
    BackendVtable => "ReceptorBackendVtable" [stop, stop, stop];
    WorkTypeInfo => "ReceptorWorkTypeInfo" [reserved, reserved, reserved];
    Progress => "ReceptorProgress" [release, release, release];
    StartRequest => "ReceptorStartRequest" [extra_params_json, extra_params_json, extra_params_json];
    ReattachRequest => "ReceptorReattachRequest" [extra_json, extra_json, extra_json];
    WorkTypeVtable => "ReceptorWorkTypeVtable" [destroy, destroy, destroy];
    SectionClaim => "ReceptorSectionClaim" [work_type, work_type, v2_key];
    PluginDescriptor => "ReceptorPluginDescriptor" [claim_count, claim_count, claim_count];
    FieldDesc => "ReceptorFieldDesc" [help, help, help];
}
