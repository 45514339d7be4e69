//! One file per command: each takes its parsed arguments, calls the library and prints what
//! happened. None decides anything the library could (see [`crate::actions`]) or exits the
//! process: an error, or an [`Exit`](super::Exit) with its own status, goes back to `main`.

pub(super) mod audit;
pub(super) mod docs;
pub(super) mod fetch;
pub(super) mod gc;
pub(super) mod init;
pub(super) mod inspect;
pub(super) mod kek;
pub(super) mod list;
pub(super) mod open;
pub(super) mod policy;
pub(super) mod remove;
pub(super) mod review;
pub(super) mod seal;
pub(super) mod serve;
pub(super) mod shred;
pub(super) mod trace;
pub(super) mod verify;
