//! Bynder REST client (AssetSource).
