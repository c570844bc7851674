//! Golden layout of ABI major 1, as literal numbers (64-bit targets): the offset of every
//! field, the size of every struct, and the frozen size of every struct at every minor.
//! A field inserted in the middle, a field moved, or a released minor's size changed
//! fails here. When a new minor appends fields, append their offsets and one more size
//! per struct; never edit an existing number.

#![cfg(target_pointer_width = "64")]

use std::ffi::c_void;
use std::mem::{offset_of, size_of};

use receptor_plugin_sdk::abi;
use receptor_plugin_sdk::layout::{self, LayoutError, Versioned};

macro_rules! offsets {
    ($($ty:ident { $($field:ident: $off:literal),* $(,)? } size $size:literal;)*) => {
        $(
            $(
                assert_eq!(
                    offset_of!(abi::$ty, $field),
                    $off,
                    concat!(stringify!($ty), ".", stringify!($field))
                );
            )*
            assert_eq!(size_of::<abi::$ty>(), $size, stringify!($ty));
        )*
    };
}

#[test]
fn every_field_offset_is_frozen() {
    offsets! {
        Str { ptr: 0, len: 8 } size 16;
        HostApi {
            struct_size: 0, abi_major: 8, abi_minor: 12, ctx: 16, log: 24,
            config_string: 32, config_int: 40, config_bool: 48, config_duration_ms: 56,
            config_list_len: 64, config_list_item: 72,
        } size 80;
        ErrorSink { struct_size: 0, ctx: 8, set: 16 } size 24;
        BackendHost {
            struct_size: 0, ctx: 8, connection: 16, release: 24, connection_tls: 32,
        } size 40;
        BackendVtable { struct_size: 0, start: 8, session_closed: 16, stop: 24 } size 32;
        WorkTypeInfo { struct_size: 0, name: 8, flags: 24, reserved: 28 } size 32;
        Progress { struct_size: 0, ctx: 8, report: 16, release: 24 } size 32;
        StartRequest {
            struct_size: 0, unit_id: 8, unit_dir: 24, stdin_fd: 40, stdout_fd: 44,
            params: 48, extra_params_json: 64,
        } size 80;
        ReattachRequest { struct_size: 0, unit_id: 8, unit_dir: 24, extra_json: 40 } size 56;
        WorkTypeVtable {
            struct_size: 0, create: 8, start: 16, reattach: 24, cancel: 32, free_unit: 40,
            destroy: 48,
        } size 56;
        SectionClaim {
            struct_size: 0, section_kind: 8, claim_type: 24, flags: 28, claim_ctx: 32,
            backend: 40, work_type: 48, help: 56, fields: 72, field_count: 80,
            bare_field: 88, v2_key: 104,
        } size 120;
        PluginDescriptor {
            struct_size: 0, abi_major: 8, abi_minor: 12, name: 16, version: 32, claims: 48,
            claim_count: 56,
        } size 64;
        FieldDesc {
            struct_size: 0, name: 8, field_type: 24, flags: 28, default_value: 32, help: 48,
        } size 64;
    }
}

#[test]
fn frozen_sizes_per_minor() {
    fn sizes<T: Versioned>() -> &'static [usize] {
        T::SIZES
    }
    // [1.0, 1.1, 1.2]
    assert_eq!(sizes::<abi::HostApi>(), [32, 32, 80]);
    assert_eq!(sizes::<abi::ErrorSink>(), [24, 24, 24]);
    assert_eq!(sizes::<abi::BackendHost>(), [32, 40, 40]);
    assert_eq!(sizes::<abi::BackendVtable>(), [32, 32, 32]);
    assert_eq!(sizes::<abi::WorkTypeInfo>(), [32, 32, 32]);
    assert_eq!(sizes::<abi::Progress>(), [32, 32, 32]);
    assert_eq!(sizes::<abi::StartRequest>(), [80, 80, 80]);
    assert_eq!(sizes::<abi::ReattachRequest>(), [56, 56, 56]);
    assert_eq!(sizes::<abi::WorkTypeVtable>(), [56, 56, 56]);
    assert_eq!(sizes::<abi::SectionClaim>(), [56, 56, 120]);
    assert_eq!(sizes::<abi::PluginDescriptor>(), [64, 64, 64]);
    // New in 1.2; the same size is repeated for the minors before it.
    assert_eq!(sizes::<abi::FieldDesc>(), [64, 64, 64]);
    // Every struct has one frozen size per minor up to the current one.
    assert_eq!(sizes::<abi::HostApi>().len(), abi::ABI_MINOR as usize + 1);
    assert_eq!(
        sizes::<abi::SectionClaim>().len(),
        abi::ABI_MINOR as usize + 1
    );
    assert_eq!(
        (abi::BACKEND_HOST_V1_0_SIZE, abi::BACKEND_HOST_V1_1_SIZE),
        (32, 40)
    );
    assert_eq!((abi::HOST_API_V1_0_SIZE, abi::HOST_API_V1_2_SIZE), (32, 80));
    assert_eq!(
        (abi::SECTION_CLAIM_V1_0_SIZE, abi::SECTION_CLAIM_V1_2_SIZE),
        (56, 120)
    );
}

unsafe extern "C" fn release(_: *mut c_void) {}

fn claim_1_2() -> abi::SectionClaim {
    abi::SectionClaim {
        struct_size: size_of::<abi::SectionClaim>(),
        section_kind: abi::Str::new("k"),
        claim_type: abi::CLAIM_WORK_TYPE,
        flags: abi::CLAIM_FLAG_OWN_TLS,
        claim_ctx: 8 as *mut c_void,
        backend: std::ptr::null(),
        work_type: std::ptr::null(),
        help: abi::Str::new("help"),
        fields: std::ptr::null(),
        field_count: 3,
        bare_field: abi::Str::new("port"),
        v2_key: abi::Str::new("ks"),
    }
}

#[test]
fn a_shorter_struct_from_an_older_peer_reads_with_default_tail() {
    let full = claim_1_2();
    let old = abi::SectionClaim {
        struct_size: abi::SECTION_CLAIM_V1_0_SIZE,
        ..full
    };
    // SAFETY: a valid struct, larger than the size it declares.
    let read = unsafe { layout::read_prefix(&old) }.unwrap();
    assert_eq!(read.struct_size, abi::SECTION_CLAIM_V1_0_SIZE);
    assert_eq!(read.claim_ctx, full.claim_ctx);
    assert_eq!(read.flags, abi::CLAIM_FLAG_OWN_TLS);
    assert_eq!(
        (read.help.len, read.field_count, read.v2_key.len),
        (0, 0, 0)
    );
    assert!(read.help.ptr.is_null() && read.bare_field.ptr.is_null());
    // A size between two minors reads as the older minor, never a part of a field.
    let between = abi::SectionClaim {
        struct_size: abi::SECTION_CLAIM_V1_0_SIZE + 12,
        ..full
    };
    // SAFETY: as above.
    let read = unsafe { layout::read_prefix(&between) }.unwrap();
    assert_eq!(read.help.len, 0);
    // The current size reads everything.
    // SAFETY: as above.
    let read = unsafe { layout::read_prefix(&full) }.unwrap();
    assert_eq!((read.field_count, read.v2_key.len), (3, 2));
}

#[test]
fn a_longer_struct_from_a_newer_peer_reads_its_known_prefix() {
    #[repr(C)]
    struct Newer {
        host: abi::BackendHost,
        later_field: u64,
    }
    let newer = Newer {
        host: abi::BackendHost {
            struct_size: size_of::<Newer>(),
            ctx: 16 as *mut c_void,
            connection: None,
            release: Some(release),
            connection_tls: None,
        },
        later_field: 7,
    };
    // SAFETY: struct_size bytes are readable at the pointer.
    let read = unsafe { layout::read_prefix(&newer.host as *const abi::BackendHost) }.unwrap();
    assert_eq!(read.struct_size, size_of::<Newer>());
    assert_eq!(read.ctx, newer.host.ctx);
    assert!(read.release.is_some());
    assert_eq!(newer.later_field, 7);
}

#[test]
fn too_small_or_null_is_an_error_naming_the_struct() {
    let tiny = abi::ErrorSink {
        struct_size: 8,
        ctx: std::ptr::null_mut(),
        set: None,
    };
    // SAFETY: a valid struct.
    let err = unsafe { layout::read_prefix(&tiny) }.unwrap_err();
    assert_eq!(
        err,
        LayoutError::TooSmall {
            what: "ReceptorErrorSink",
            size: 8,
            min: 24
        }
    );
    assert!(
        err.to_string().contains("ReceptorErrorSink of 8 bytes"),
        "{err}"
    );
    // SAFETY: null is allowed.
    let err = unsafe { layout::read_prefix::<abi::Progress>(std::ptr::null()) }.unwrap_err();
    assert_eq!(
        err,
        LayoutError::Null {
            what: "ReceptorProgress"
        }
    );
}

#[test]
fn an_out_struct_is_written_only_as_far_as_the_peer_allocated() {
    // A 1.0 host allocates a WorkTypeInfo of its size: everything is written.
    let mut info = abi::WorkTypeInfo {
        struct_size: 32,
        name: abi::Str::EMPTY,
        flags: 0,
        reserved: 0,
    };
    let value = abi::WorkTypeInfo {
        struct_size: 999,
        name: abi::Str::new("echo"),
        flags: 3,
        reserved: 0,
    };
    // SAFETY: a valid, writable struct.
    unsafe { layout::write_prefix(&mut info, &value) }.unwrap();
    assert_eq!((info.struct_size, info.name.len, info.flags), (32, 4, 3));
    // A BackendHost-shaped out-struct of the 1.0 size keeps its tail untouched.
    let mut host = abi::BackendHost {
        struct_size: abi::BACKEND_HOST_V1_0_SIZE,
        ctx: std::ptr::null_mut(),
        connection: None,
        release: None,
        connection_tls: None,
    };
    let value = abi::BackendHost {
        struct_size: 0,
        ctx: 24 as *mut c_void,
        connection: None,
        release: Some(release),
        connection_tls: None,
    };
    // SAFETY: as above.
    unsafe { layout::write_prefix(&mut host, &value) }.unwrap();
    assert_eq!(host.struct_size, abi::BACKEND_HOST_V1_0_SIZE);
    assert_eq!(host.ctx, value.ctx);
    assert!(host.release.is_some() && host.connection_tls.is_none());
}
