//! Rendering errors for people: the whole cause chain on one line.

use std::error::Error;
use std::fmt::Write as _;

/// `error: cause: cause's cause`, for logs and `detail` messages. Error
/// types here keep their causes as sources rather than formatting them
/// into their own message, so this is where the chain is spelled out.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to http://x")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_causes() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(
            super::chain(&e),
            "cannot connect to http://x: Connection refused"
        );
    }
}
