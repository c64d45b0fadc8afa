//! Akeneo simulator (see README).
