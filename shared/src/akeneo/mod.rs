//! Akeneo Asset Manager client.
