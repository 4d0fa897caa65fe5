//! # cairn-client
//!
//! The uploader's and scripter's way into a Cairn network, and the `cairn` command-line tool.
//! Today it holds the local development network ([`devnet`]); the object client (put, get,
//! verify) arrives with the client issue.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod devnet;
