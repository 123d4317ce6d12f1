//! Phone numbers in E.164.
