//! A member's home as an archive: downloaded as a tar (or tar.gz) stream whether a server
//! runs or not, and restored from one into the home of a stopped server.
//!
//! Both directions stream: the runtime reads or writes the files through a container that
//! mounts the home and never runs (the hub never opens a user's file itself), and the hub
//! only passes bounded chunks between the runtime and the client, compressing or
//! decompressing on the way. Dropping the download stream ends the read and removes the
//! container; a restore cut short leaves the files written so far.

use async_compression::Level;
use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder};
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use labhub_core::{ServerName, ServerState, UserName};
use labhub_db::{servers, users};
use serde_json::json;
use tokio_util::io::{ReaderStream, StreamReader};

use super::Homes;
use crate::ServiceError;
use crate::access::Actor;
use crate::model::server_label;

/// How an archive is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A plain tar.
    Tar,
    /// A gzip-compressed tar.
    TarGz,
}

impl ArchiveFormat {
    /// Reads `tar` or `tar.gz` (as in `?format=`).
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        match raw {
            "" | "tar" => Ok(Self::Tar),
            "tar.gz" | "tgz" => Ok(Self::TarGz),
            other => Err(ServiceError::Invalid(format!("the format must be tar or tar.gz, not {other:?}"))),
        }
    }

    /// The file name's ending.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Tar => "tar",
            Self::TarGz => "tar.gz",
        }
    }

    /// The media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Tar => "application/x-tar",
            Self::TarGz => "application/gzip",
        }
    }
}

/// A home's files on their way out.
pub struct HomeArchive {
    /// A name for the file, e.g. `alice-home-2026-12-06.tar.gz`.
    pub file_name: String,
    pub format: ArchiveFormat,
    /// The archive's bytes; dropping it ends the read.
    pub body: BoxStream<'static, Result<Bytes, std::io::Error>>,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Bytes of tar read (after decompression).
    pub bytes: u64,
}

/// A gzip stream starts with these two bytes; a tar never does (its first bytes are a name).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A tar stream from the runtime, packed as asked: passed on as it is, or gzipped on the way
/// at the fastest level (a home then streams at disk speed rather than at one core's gzip).
/// Memory stays bounded: chunks pass through as they come.
pub(crate) fn packed(
    tar: BoxStream<'static, Result<Bytes, labhub_core::spawner::SpawnError>>,
    format: ArchiveFormat,
) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    let tar = tar.map_err(std::io::Error::other);
    match format {
        ArchiveFormat::Tar => tar.boxed(),
        ArchiveFormat::TarGz => {
            let encoder = GzipEncoder::with_quality(StreamReader::new(tar), Level::Fastest);
            ReaderStream::with_capacity(encoder, 64 * 1024).boxed()
        }
    }
}

/// Undoes gzip when the stream is compressed; passes a plain tar through.
pub(crate) async fn decompressed(
    mut upload: BoxStream<'static, Result<Bytes, std::io::Error>>,
) -> Result<BoxStream<'static, Result<Bytes, std::io::Error>>, ServiceError> {
    let mut head = Vec::new();
    while head.len() < 2 {
        match upload.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => return Err(ServiceError::Invalid(format!("the archive could not be read: {e}"))),
            None => break,
        }
    }
    if head.is_empty() {
        return Err(ServiceError::Invalid("the archive is empty".into()));
    }
    let gzip = head.starts_with(&GZIP_MAGIC);
    let whole = futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(upload);
    if !gzip {
        return Ok(whole.boxed());
    }
    let decoder = GzipDecoder::new(StreamReader::new(whole));
    Ok(ReaderStream::with_capacity(decoder, 64 * 1024).boxed())
}

impl Homes<'_> {
    /// Refuses unless the actor is the account or an admin; the account's row.
    async fn reachable(&self, actor: Actor<'_>, owner: &UserName) -> Result<labhub_db::users::User, ServiceError> {
        let user = self.hub.user_row(owner).await?;
        actor.require_self_or_admin(user.user_id)?;
        Ok(user)
    }

    /// The files of an account's home (the member or an admin), as a stream, whether its
    /// server runs or not.
    pub async fn archive(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        format: ArchiveFormat,
    ) -> Result<HomeArchive, ServiceError> {
        let user = self.reachable(actor, owner).await?;
        let home = self.of(user.user_id, server).await?;
        let tar = self.spawner()?.archive(&home).await.map_err(|e| ServiceError::Unavailable(e.to_string()))?;
        let body = packed(tar, format);
        let label = server_label(owner, server);
        let detail = json!({ "format": format.extension() });
        self.hub.audit().record(self.hub.db(), actor, "home.archive", &label, detail).await?;
        let suffix = server.map(|s| format!("-{s}")).unwrap_or_default();
        let file_name = format!("{owner}{suffix}-home-{}.{}", self.hub.now().date(), format.extension());
        Ok(HomeArchive { file_name, format, body })
    }

    /// Unpacks a tar or tar.gz into an account's home (the member or an admin), over files of
    /// the same names. Refused while any of the account's servers is not stopped, and starts
    /// are refused while it runs. A stream that fails midway leaves what was written so far.
    pub async fn restore(
        &self,
        actor: Actor<'_>,
        owner: &UserName,
        server: Option<&ServerName>,
        upload: BoxStream<'static, Result<Bytes, std::io::Error>>,
    ) -> Result<Restored, ServiceError> {
        let user = self.reachable(actor, owner).await?;
        let bytes = self.restore_into(&user, server, upload).await?;
        let label = server_label(owner, server);
        self.hub.audit().record(self.hub.db(), actor, "home.restore", &label, json!({ "bytes": bytes })).await?;
        Ok(Restored { bytes })
    }

    /// Unpacks a tar or tar.gz into an account's home, over files of the same names; returns
    /// the bytes of tar read. Refused while any of the account's servers is not stopped, and
    /// starts are refused while it runs. The caller checked who asks and audits.
    pub(crate) async fn restore_into(
        &self,
        user: &labhub_db::users::User,
        server: Option<&ServerName>,
        upload: BoxStream<'static, Result<Bytes, std::io::Error>>,
    ) -> Result<u64, ServiceError> {
        let owner = &user.name;
        // Under the account's row lock, which a start holds from its check of the mark to its
        // pending row's commit: either the start sees the mark, or the restore sees the start.
        // The mark is in Postgres, so starts through every replica see it.
        let mut tx = self.hub.begin().await?;
        users::by_name_for_update(&mut *tx, owner).await?;
        let Some(mark) = labhub_db::homes::mark_restoring(self.hub.db(), user.user_id).await? else {
            return Err(ServiceError::Conflict(format!("files are already being restored into {owner}'s home")));
        };
        let rows = servers::list_for_user(&mut *tx, user.user_id).await?;
        tx.commit().await?;
        let restored = async {
            if rows.iter().any(|s| s.state != ServerState::Stopped) {
                return Err(ServiceError::Conflict(format!(
                    "{owner} has a server running; stop it before restoring files into the home"
                )));
            }
            let home = self.of(user.user_id, server).await?;
            let tar = decompressed(upload).await?;
            self.spawner()?.restore(&home, "", tar).await.map_err(|e| ServiceError::Conflict(e.to_string()))
        }
        .await;
        mark.release().await;
        restored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(s: BoxStream<'static, Result<Bytes, std::io::Error>>) -> Vec<u8> {
        s.try_fold(Vec::new(), |mut v, b| async move {
            v.extend_from_slice(&b);
            Ok(v)
        })
        .await
        .unwrap()
    }

    fn chunks(data: Vec<u8>, size: usize) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
        let parts: Vec<_> = data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        futures::stream::iter(parts).boxed()
    }

    #[tokio::test]
    async fn a_plain_tar_passes_through_and_a_gzipped_one_is_unpacked_even_one_byte_at_a_time() {
        let tar = b"./notes.txt\0rest of a tar header".to_vec();
        assert_eq!(collect(decompressed(chunks(tar.clone(), 1)).await.unwrap()).await, tar);
        let encoder = GzipEncoder::new(StreamReader::new(chunks(tar.clone(), 7)));
        let gz = collect(ReaderStream::new(encoder).boxed()).await;
        assert!(gz.starts_with(&GZIP_MAGIC));
        assert_eq!(collect(decompressed(chunks(gz, 1)).await.unwrap()).await, tar);
    }

    #[tokio::test]
    async fn an_empty_upload_is_refused() {
        let err = decompressed(chunks(Vec::new(), 1)).await.err().unwrap();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn formats_read_as_the_api_spells_them() {
        assert_eq!(ArchiveFormat::parse("").unwrap(), ArchiveFormat::Tar);
        assert_eq!(ArchiveFormat::parse("tar.gz").unwrap(), ArchiveFormat::TarGz);
        assert!(ArchiveFormat::parse("zip").is_err());
    }
}
