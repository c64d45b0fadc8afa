//! Generic REST client (AssetSource).
