//! Cloudinary REST client (AssetSource).
