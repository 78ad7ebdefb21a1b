//! One line for an error and its causes, for log fields (`error = %ErrorChain(&e)`): the
//! error types keep their causes as `source()` (the binary prints the chain through anyhow),
//! and a log line must still say everything on its own.

use std::error::Error;
use std::fmt;

pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read tls.crt")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_error_and_its_causes_read_as_one_line() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "cannot read tls.crt: no such file"
        );
    }
}
