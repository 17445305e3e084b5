//! Long diagnoses that outlive one connection or one instance: SysOM keeps every diagnosis by
//! task id, so the task handle a client holds carries what any instance needs to answer for it.

pub mod handle;
pub mod keys;
