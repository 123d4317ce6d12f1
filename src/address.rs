//! Mail addresses and domains in the one form routing compares.
