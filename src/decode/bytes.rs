//! Bounds-checked native-endian reads. Netlink is host byte order; only the
//! ports and addresses inside `inet_diag_sockid` are network order.

#[inline]
pub(crate) fn u8_at(buf: &[u8], off: usize) -> Option<u8> {
    buf.get(off).copied()
}

#[inline]
pub(crate) fn u16_at(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}

#[inline]
pub(crate) fn u16_be_at(buf: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes(buf.get(off..off + 2)?.try_into().ok()?))
}

#[inline]
pub(crate) fn u32_at(buf: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}

#[inline]
pub(crate) fn i32_at(buf: &[u8], off: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(buf.get(off..off + 4)?.try_into().ok()?))
}

#[inline]
pub(crate) fn u64_at(buf: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(off..off + 8)?.try_into().ok()?))
}

/// Rounds a netlink length up to the 4-byte alignment (`NLMSG_ALIGN`, `NLA_ALIGN`).
#[inline]
pub const fn align4(len: usize) -> usize {
    (len + 3) & !3
}
