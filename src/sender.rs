//! Who sent a message.
