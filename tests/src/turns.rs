//! What tests sharing one process must not do side by side, as locks they take turns on.

/// The runs that keep the CPU busy for a while take turns: side by side on a 2-core machine,
/// each starves the other (the Akeneo client then reacts to a 429 too late, and the chaos
/// suite's run paced for moto falls behind its queue).
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
