//! What tests sharing one process must not do side by side, as locks they take turns on.

/// The runs that keep the CPU busy for a while, or whose assertions are about timing, take
/// turns here, one at a time: beside another busy run on a 2-core machine, the Akeneo client
/// reacts to a 429 later than the simulator's grace (a "call inside Retry-After"), and a run
/// paced to what moto serves falls behind its queue. Light tests still run beside them.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Keeps the busy-run turn to the caller until the guard drops.
pub async fn heavy_alone() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.lock().await
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
