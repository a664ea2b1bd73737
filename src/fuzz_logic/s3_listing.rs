//! The `s3_listing` target's property: no file an S3 listing names lands
//! outside the output directory.

/// An S3 listing body, under a prefix the first input bytes choose: no
/// panic, and no file it names lands outside the output directory.
pub fn s3_listing(data: &[u8]) {
    let [prefix_len, rest @ ..] = data else {
        return;
    };
    let split = usize::from(*prefix_len % 16).min(rest.len());
    let (Ok(prefix), Ok(body)) = (
        std::str::from_utf8(&rest[..split]),
        std::str::from_utf8(&rest[split..]),
    ) else {
        return;
    };
    crate::download::s3::check_listing(body, prefix);
}
