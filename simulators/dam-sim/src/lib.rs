//! DAM simulator (see README).
