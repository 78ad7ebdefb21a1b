//! The command line, through the built binary: `certs` (`certs`) and `test` (`policy_test`).

mod certs;
mod explain_memory;
mod policy_test;
