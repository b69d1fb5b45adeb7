//! A session object's storage where the host has no SQLite under the
//! object but an asynchronous key-value store: Deno KV, under the Deno
//! server (src/js/deno/). The host binds `SESSION_KV`, which reads one
//! session and commits a call's writes (its layout of keys is the host's:
//! src/js/deno/store.mjs). The session logic runs over a [`Staged`] copy,
//! and every write is committed before its answer (or a turn's last event)
//! goes out, as the SQLite store writes before it.
//!
//! The host hands over bytes only: the JSON is read and written here, so
//! a 64-bit seed never passes through a JavaScript number.

use js_sys::{Array, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::Env;

use crate::api::sessions::{
    Session, SessionMeta, SessionStore, Staged, StoreError, StoredMessage, Write,
};
use crate::api::ApiError;

/// The host's binding, when it has one.
const BINDING: &str = "SESSION_KV";

#[wasm_bindgen]
extern "C" {
    /// `SESSION_KV`: `load(id)` resolves to `null` or `{ version, meta,
    /// turns }` (the session's stored bytes, each turn's rows apart);
    /// `commit(id, version, writes)` applies `[op, bytes]` pairs atomically
    /// if the session is still at `version`, and resolves to its new one,
    /// or rejects with an error named `Conflict` when it is not.
    #[wasm_bindgen(extends = js_sys::Object)]
    #[derive(Clone)]
    pub type SessionKv;
    #[wasm_bindgen(method, catch)]
    fn load(this: &SessionKv, id: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn commit(
        this: &SessionKv,
        id: &str,
        version: &JsValue,
        writes: &Array,
    ) -> Result<Promise, JsValue>;
}

/// The `SESSION_KV` binding, if the host gave one.
pub fn binding(env: &Env) -> Option<SessionKv> {
    let value = Reflect::get(env, &JsValue::from_str(BINDING)).ok()?;
    (!value.is_undefined() && !value.is_null()).then(|| value.unchecked_into())
}

fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("{what}: {e}"))
}

fn bytes_of(value: &JsValue, what: &str) -> Result<Vec<u8>, StoreError> {
    value
        .dyn_ref::<Uint8Array>()
        .map(Uint8Array::to_vec)
        .ok_or_else(|| StoreError(format!("the stored session has no {what} bytes")))
}

/// One session read from the host's store, and the version it was read at.
pub struct KvStore {
    kv: SessionKv,
    staged: Staged,
    version: JsValue,
}

impl KvStore {
    /// Reads session `id` (call it with the object's turn lock held, so a
    /// turn waiting for another sees that one's rows).
    pub async fn open(kv: SessionKv, id: &str) -> Result<KvStore, StoreError> {
        let promise = kv.load(id).map_err(|e| failed("load", describe(&e)))?;
        let found = JsFuture::from(promise)
            .await
            .map_err(|e| failed("load", describe(&e)))?;
        let field = |name: &str| Reflect::get(&found, &JsValue::from_str(name)).unwrap_or_default();
        let (session, version) = if found.is_null() || found.is_undefined() {
            (None, JsValue::NULL)
        } else {
            let meta: SessionMeta = serde_json::from_slice(&bytes_of(&field("meta"), "meta")?)
                .map_err(|e| failed("stored meta", e))?;
            let mut messages = Vec::new();
            for turn in Array::from(&field("turns")).iter() {
                let rows: Vec<StoredMessage> = serde_json::from_slice(&bytes_of(&turn, "turn")?)
                    .map_err(|e| failed("stored turn", e))?;
                messages.extend(rows);
            }
            (Some(Session { meta, messages }), field("version"))
        };
        Ok(KvStore {
            kv,
            staged: Staged::new(id, session),
            version,
        })
    }

    /// Commits the writes made since the last flush (none: nothing to do).
    /// A session another server changed since it was read is a 409 and
    /// nothing is written; any other failure a 500.
    pub async fn flush(&mut self) -> Result<(), ApiError> {
        let writes = self.staged.take_writes();
        if writes.is_empty() {
            return Ok(());
        }
        let pairs = Array::new();
        for write in &writes {
            let (op, bytes) = match write {
                Write::Create { meta } => ("create", serde_json::to_vec(meta)),
                Write::Append { rows } => ("append", serde_json::to_vec(rows)),
                Write::Delete => ("delete", Ok(Vec::new())),
            };
            let bytes = bytes.map_err(|e| ApiError::internal(e.to_string()))?;
            pairs.push(&Array::of2(
                &JsValue::from_str(op),
                &Uint8Array::from(bytes.as_slice()),
            ));
        }
        let committed = match self.kv.commit(self.staged.id(), &self.version, &pairs) {
            Ok(promise) => JsFuture::from(promise).await,
            Err(e) => Err(e),
        };
        match committed {
            Ok(version) => {
                self.version = version;
                Ok(())
            }
            Err(e) if is_conflict(&e) => Err(ApiError::conflict(
                "session_busy",
                "another server stored a turn of this session meanwhile; nothing of this one \
                 was stored: send it again",
            )
            .with_param("session")),
            Err(e) => Err(StoreError(format!("commit: {}", describe(&e))).into()),
        }
    }
}

fn is_conflict(e: &JsValue) -> bool {
    e.dyn_ref::<js_sys::Error>()
        .is_some_and(|e| e.name() == "Conflict")
}

impl SessionStore for KvStore {
    fn create(&mut self, meta: &SessionMeta) -> Result<(), StoreError> {
        self.staged.create(meta)
    }

    fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        self.staged.load(id)
    }

    fn append(&mut self, id: &str, rows: &[StoredMessage]) -> Result<(), StoreError> {
        self.staged.append(id, rows)
    }

    fn delete(&mut self, id: &str) -> Result<(), StoreError> {
        self.staged.delete(id)
    }
}
