//! What tests sharing one process must not do side by side, as locks they take turns on.

/// The runs that keep the CPU busy for a while, or whose assertions are about timing, take
/// turns here. A run that measures pacing (the Akeneo client's "no 429" runs) or that is paced
/// to what moto serves has the CPU to itself: beside another busy run on a 2-core machine, the
/// client reacts to a 429 too late and the moto run falls behind its queue. The embedded chaos
/// runs share it with each other: they wait mostly on timeouts and redeliveries, and their
/// Akeneo simulator allows for the slower reaction to a 429 (see `chaos.rs`).
static HEAVY: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Keeps the busy-run turn to the caller alone until the guard drops.
pub async fn heavy_alone() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    HEAVY.write().await
}

/// A busy-run turn shared with other [`heavy_shared`] callers, never with [`heavy_alone`] ones.
pub async fn heavy_shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    HEAVY.read().await
}

/// moto serves every call from one Python core: a run paced to what moto serves alone holds it
/// for writing, every other user passes a read turn before it starts.
static MOTO: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Keeps moto to the caller until the guard drops; meanwhile [`crate::moto_config`] waits, so
/// take this after building the caller's own clients.
pub async fn moto_to_itself() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    MOTO.write().await
}

/// Waits while a run has moto to itself. A test past this point when such a run starts makes
/// its remaining calls beside it.
pub(crate) async fn wait_for_moto() {
    drop(MOTO.read().await);
}
