//! Built-in image recipes: scripts in the repository (`images/…`) that build the
//! catalogue's default images locally, so a site without a registry still gets them.
//!
//! A recipe's files are embedded in the binary, written to a fresh temporary directory
//! and run there with bash. A script reports progress on stdout as lines
//! `##progress <percent> <message>`; everything else it prints is kept (the last
//! [`LOG_TAIL_LINES`] lines) to explain a failure.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::Mutex;

use labhub_core::ImageRef;
use labhub_core::spawner::{ImageBuilder, Progress, ProgressSender, SpawnError};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::DockerSpawner;
use crate::error::runtime_error;

/// Lines of a failed build's output quoted in its error.
pub const LOG_TAIL_LINES: usize = 30;

/// One file of a recipe.
#[derive(Debug)]
struct RecipeFile {
    name: &'static str,
    contents: &'static str,
    executable: bool,
}

/// A built-in recipe.
#[derive(Debug)]
pub struct Recipe {
    name: &'static str,
    description: &'static str,
    default_image: &'static str,
    entry: &'static str,
    files: &'static [RecipeFile],
}

/// Every built-in recipe.
static RECIPES: &[Recipe] = &[Recipe {
    name: "jupyterlab",
    description: "JupyterLab 4 and ipykernel in a venv on Debian bookworm, user jovyan (1000:100)",
    default_image: "labhub/jupyterlab:1",
    entry: "build.sh",
    files: &[
        RecipeFile {
            name: "build.sh",
            contents: include_str!("../../../images/jupyterlab/build.sh"),
            executable: true,
        },
        // The script pins its pip install to this file and hashes both into the image label.
        RecipeFile {
            name: "requirements.txt",
            contents: include_str!("../../../images/jupyterlab/requirements.txt"),
            executable: false,
        },
    ],
}];

impl Recipe {
    /// Every built-in recipe.
    pub fn all() -> &'static [Recipe] {
        RECIPES
    }

    /// The recipe with this name.
    pub fn by_name(name: &str) -> Option<&'static Recipe> {
        RECIPES.iter().find(|r| r.name == name)
    }

    /// The recipe that builds this catalogue image, when it is a built-in default.
    pub fn for_image(image: &ImageRef) -> Option<&'static Recipe> {
        RECIPES.iter().find(|r| r.default_image == image.as_str())
    }

    /// The recipe's name (`jupyterlab`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What the image holds, for the admin page.
    pub fn description(&self) -> &'static str {
        self.description
    }

    /// The image reference the catalogue's default entry uses.
    pub fn default_image(&self) -> &'static str {
        self.default_image
    }

    /// Writes the recipe's files into `dir`.
    fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for file in self.files {
            let path = dir.join(file.name);
            std::fs::write(&path, file.contents)?;
            let mode = if file.executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        }
        Ok(())
    }
}

/// Reads a `##progress <percent> <message>` line.
fn parse_progress(line: &str) -> Option<Progress> {
    let rest = line.strip_prefix("##progress ")?;
    let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let percent: u8 = percent.trim().parse().ok()?;
    Some(Progress { percent: percent.min(100), message: message.trim().to_string() })
}

/// Keeps the last lines of output.
#[derive(Default)]
struct Tail(Mutex<VecDeque<String>>);

impl Tail {
    fn push(&self, line: String) {
        // A poisoned lock only means another reader panicked; the lines are still good.
        let mut lines = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == LOG_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

/// The last lines of a failed script: its standard output's, then its error output's. The
/// two pipes are read side by side and a chatty output can be read well after the error
/// line was written, so the error lines are kept apart (up to half the space) and never
/// pushed out by output that came before them.
fn failure_tail(out: &Tail, err: &Tail) -> String {
    let err = err.lines();
    let err = &err[err.len().saturating_sub(LOG_TAIL_LINES / 2)..];
    let out = out.lines();
    let out = &out[out.len().saturating_sub(LOG_TAIL_LINES - err.len())..];
    out.iter().chain(err).cloned().collect::<Vec<_>>().join("\n")
}

async fn follow(reader: impl AsyncRead + Unpin, progress: Option<&ProgressSender>, tail: &Tail) {
    let mut lines = BufReader::new(reader).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match (progress, parse_progress(&line)) {
            (Some(sender), Some(p)) => {
                tracing::info!(percent = p.percent, message = %p.message, "image build");
                let _ = sender.send(p);
            }
            _ => {
                tracing::debug!(line = %line, "image build output");
                tail.push(line);
            }
        }
    }
}

/// Why a build script did not succeed.
#[derive(Debug, thiserror::Error)]
enum ScriptError {
    #[error("could not run the script: {0}")]
    Io(#[from] std::io::Error),
    #[error("the script failed ({status}); its last lines:\n{tail}")]
    Failed { status: std::process::ExitStatus, tail: String },
}

/// A running build script with its output pipes. Dropped before the script ended (the build
/// abandoned), it asks the script's whole process group to end with SIGTERM, not SIGKILL: the
/// recipes trap it to remove their temporary files and images, and their tools (mmdebstrap)
/// clean up after themselves, whereas killing the script alone would leave its children
/// running and its files behind. A task then reads the pipes until the script is gone: a
/// script whose output nobody reads dies of SIGPIPE at its next line, before its traps ran.
struct Script {
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    ended: bool,
}

impl Script {
    /// Starts `bash script arg` in the script's directory, in a process group of its own.
    fn spawn(script: &Path, arg: &str) -> std::io::Result<Self> {
        let mut child = Command::new("bash")
            .arg(script)
            .arg(arg)
            .current_dir(script.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        Ok(Self { child: Some(child), stdout, stderr, ended: false })
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take().filter(|_| !self.ended) else { return };
        let Some(group) = child.id() else { return };
        // bash's `kill` reaches a process group (a negative id) without a signal API here.
        let sent = std::process::Command::new("bash")
            .args(["-c", &format!("kill -TERM -- -{group}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            tracing::warn!(group, "could not stop the processes of an abandoned image build");
        }
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                tokio::join!(drain(stdout), drain(stderr));
                let _ = child.wait().await;
            });
        }
    }
}

/// Reads a pipe to its end, keeping nothing.
async fn drain(pipe: Option<impl AsyncRead + Unpin>) {
    if let Some(mut pipe) = pipe {
        let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
    }
}

/// Runs `bash script arg` in the script's directory, turning `##progress` lines into
/// progress and keeping the last other lines for the error.
async fn run_script(script: &Path, arg: &str, progress: &ProgressSender) -> Result<(), ScriptError> {
    let mut running = Script::spawn(script, arg)?;
    let (out_tail, err_tail) = (Tail::default(), Tail::default());
    let Script { child, stdout, stderr, .. } = &mut running;
    let out = async {
        if let Some(s) = stdout {
            follow(s, Some(progress), &out_tail).await;
        }
    };
    let err = async {
        if let Some(s) = stderr {
            follow(s, None, &err_tail).await;
        }
    };
    let wait = async {
        match child {
            Some(c) => c.wait().await,
            None => Err(std::io::Error::other("the build script was not started")),
        }
    };
    let ((), (), status) = tokio::join!(out, err, wait);
    running.ended = true;
    let status = status?;
    if status.success() {
        Ok(())
    } else {
        Err(ScriptError::Failed { status, tail: failure_tail(&out_tail, &err_tail) })
    }
}

impl DockerSpawner {
    /// Builds `tag` with a built-in recipe, reporting its progress; returns the new image's
    /// id. Takes minutes (a Debian root filesystem is bootstrapped); needs root.
    pub async fn build_recipe(
        &self,
        recipe: &Recipe,
        tag: &ImageRef,
        progress: ProgressSender,
    ) -> Result<String, SpawnError> {
        let failed =
            |e: &dyn std::fmt::Display| runtime_error(&format!("building image {tag} ({} recipe)", recipe.name), e);
        let dir = tempfile::Builder::new().prefix("labhub-recipe-").tempdir().map_err(|e| failed(&e))?;
        recipe.write_to(dir.path()).map_err(|e| failed(&e))?;
        tracing::info!(recipe = recipe.name, image = %tag, "building an image from its recipe");
        run_script(&dir.path().join(recipe.entry), tag.as_str(), &progress).await.map_err(|e| failed(&e))?;
        let image = self
            .docker()
            .inspect_image(tag.as_str())
            .await
            .map_err(|e| failed(&format!("the build finished but the image is not there: {e}")))?;
        image.id.ok_or_else(|| failed(&"the built image has no id"))
    }
}

#[async_trait::async_trait]
impl ImageBuilder for DockerSpawner {
    fn recipes(&self) -> Vec<String> {
        RECIPES.iter().map(|r| r.name.to_string()).collect()
    }

    async fn build(&self, recipe: &str, tag: &ImageRef, progress: ProgressSender) -> Result<String, SpawnError> {
        let Some(found) = Recipe::by_name(recipe) else {
            return Err(SpawnError::Invalid(format!(
                "there is no built-in recipe '{recipe}' (known: {})",
                self.recipes().join(", ")
            )));
        };
        self.build_recipe(found, tag, progress).await
    }

    async fn build_environment(
        &self,
        spec: &labhub_core::environment::EnvBuildSpec,
        progress: ProgressSender,
    ) -> labhub_core::environment::EnvBuildOutcome {
        self.build_environment_image(spec, progress).await
    }

    async fn built_images(&self) -> Result<Vec<labhub_core::environment::BuiltImage>, SpawnError> {
        self.environment_images().await
    }

    async fn remove_built_image(&self, id: &str) -> Result<bool, SpawnError> {
        self.remove_environment_image(id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_jupyterlab_image_has_a_recipe() {
        let image = ImageRef::parse("labhub/jupyterlab:1").unwrap();
        let recipe = Recipe::for_image(&image).unwrap();
        assert_eq!(recipe.name(), "jupyterlab");
        assert!(Recipe::by_name("jupyterlab").is_some());
        assert!(Recipe::for_image(&ImageRef::parse("labhub/jupyterlab:2").unwrap()).is_none());
        for r in Recipe::all() {
            assert!(ImageRef::parse(r.default_image()).is_ok(), "{}", r.default_image());
            assert!(r.files.iter().any(|f| f.name == r.entry && f.executable));
        }
        assert!(recipe.files[0].contents.contains("##progress"), "the script reports progress");
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            parse_progress("##progress 45 creating the venv in /opt/jupyter"),
            Some(Progress { percent: 45, message: "creating the venv in /opt/jupyter".into() })
        );
        assert_eq!(parse_progress("##progress 100"), Some(Progress { percent: 100, message: String::new() }));
        assert_eq!(parse_progress("##progress x y"), None);
        assert_eq!(parse_progress("building"), None);
    }

    #[tokio::test]
    async fn scripts_report_progress_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("build.sh");
        std::fs::write(
            &script,
            "echo '##progress 10 first'\necho chatter\necho \"arg=$1\" >&2\necho '##progress 100 done'\n",
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        run_script(&script, "x:1", &tx).await.unwrap();
        drop(tx);
        let mut seen = Vec::new();
        while let Some(p) = rx.recv().await {
            seen.push(p);
        }
        assert_eq!(
            seen,
            vec![Progress { percent: 10, message: "first".into() }, Progress { percent: 100, message: "done".into() }]
        );

        std::fs::write(&script, "for i in $(seq 1 50); do echo line$i; done\necho boom >&2\nexit 3\n").unwrap();
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        match run_script(&script, "x:1", &tx).await.unwrap_err() {
            ScriptError::Failed { status, tail } => {
                assert_eq!(status.code(), Some(3));
                assert!(tail.ends_with("line50\nboom"), "the error line is kept, after the output: {tail}");
                assert_eq!(tail.lines().count(), LOG_TAIL_LINES, "only the last lines are kept");
                assert!(!tail.contains("line1\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_abandoned_build_stops_its_processes_and_lets_them_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("build.sh");
        // Like the recipes: a trap that cleans up on exit, turning TERM into an exit; a child
        // in the foreground that the script waits for.
        std::fs::write(
            &script,
            "trap 'touch cleaned' EXIT\ntrap 'exit 130' INT TERM\n\
             sh -c 'echo $$ > child.pid; echo \"##progress 10 working\"; exec sleep 60'\n",
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let build = run_script(&script, "x:1", &tx);
        tokio::select! {
            _ = build => panic!("the script ended by itself"),
            p = rx.recv() => assert_eq!(p.unwrap().percent, 10),
        }
        let (cleaned, pid_file) = (dir.path().join("cleaned"), dir.path().join("child.pid"));
        let gone = || {
            let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
            !pid.trim().is_empty() && !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
        };
        let t0 = std::time::Instant::now();
        while !(cleaned.exists() && gone()) && t0.elapsed() < std::time::Duration::from_secs(10) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(cleaned.exists(), "the script's exit trap ran");
        assert!(gone(), "the script's child was stopped too");
    }

    #[tokio::test]
    async fn the_recipe_is_written_with_its_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        Recipe::by_name("jupyterlab").unwrap().write_to(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("build.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(dir.path().join("requirements.txt").exists());
    }
}
