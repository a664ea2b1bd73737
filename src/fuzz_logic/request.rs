//! The `request` target's property: the request head parser never panics,
//! never claims more bytes than it was given, and agrees with itself.

use crate::http::request::{Limits, parse_head};

/// Parses arbitrary bytes as a request head: never panics, never claims
/// more bytes than it was given, and agrees with itself on any prefix.
pub fn request(data: &[u8]) {
    let limits = Limits {
        max_head: 4096,
        max_body: 1 << 20,
    };
    match parse_head(data, &limits) {
        Ok(Some((request, len))) => {
            assert!(len <= data.len());
            assert!(request.path.len() < data.len());
            // The same head with anything after it parses the same way.
            let (again, len_again) = parse_head(&data[..len], &limits).unwrap().unwrap();
            assert_eq!((again.path, len_again), (request.path, len));
        }
        Ok(None) => assert!(data.len() <= limits.max_head),
        Err(_) => {}
    }
}
