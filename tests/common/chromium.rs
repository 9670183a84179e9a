//! Headless Chromium (Debian's `chromium` package) for tests that check a page as a browser
//! renders it: `--dump-dom` after the page's scripts ran, and `--screenshot`. Every run gets a
//! fresh profile in the test's dir, no sandbox (tests run as root), no GPU, no QUIC, no proxy,
//! no background or component traffic, and a host resolver that resolves nothing but
//! 127.0.0.1, so the browser talks only to the loopback URL it is given.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::run_with_timeout;

/// How long one browser run may take (start-up of a cold Chromium in a busy container included).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A Chromium binary on PATH, if any.
pub fn find() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|p| super::have(p))
        .map(PathBuf::from)
}

/// One headless browser configuration.
pub struct Chromium {
    bin: PathBuf,
    dir: PathBuf,
    runs: u32,
}

impl Chromium {
    /// A browser that keeps its profiles and logs under `dir`.
    pub fn new(bin: PathBuf, dir: &Path) -> Chromium {
        Chromium {
            bin,
            dir: dir.to_path_buf(),
            runs: 0,
        }
    }

    fn command(&mut self, extra: &[String], url: &str) -> (Command, String) {
        self.runs += 1;
        let name = format!("chromium-{}", self.runs);
        let profile = self.dir.join(format!("{name}-profile"));
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--disable-crash-reporter",
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url);
        (cmd, name)
    }

    /// Runs the browser on `url`; its stdout, or why it failed (with its stderr). A run that
    /// prints nothing where a DOM was asked for failed too (Chromium exits 0 on a failed load).
    async fn run(&mut self, extra: &[String], url: &str) -> Result<String, String> {
        let (cmd, name) = self.command(extra, url);
        let dir = self.dir.clone();
        let wants_output = extra.iter().any(|a| a == "--dump-dom");
        let (status, out, err) =
            tokio::task::spawn_blocking(move || run_with_timeout(cmd, &dir, &name, RUN_TIMEOUT))
                .await
                .map_err(|e| e.to_string())?;
        match status {
            Some(s) if s.success() && !(wants_output && out.trim().is_empty()) => Ok(out),
            other => Err(format!(
                "chromium on {url} exited with {other:?} and {} bytes of output; stderr:\n{err}",
                out.len()
            )),
        }
    }

    /// Whether this browser starts and runs a script here (e.g. not in a container without the
    /// libraries it needs): Err with the reason when it cannot.
    pub async fn probe(&mut self) -> Result<(), String> {
        let page = "data:text/html,<p id=p>no</p><script>p.textContent='scripts-run'</script>";
        let dom = self.run(&["--dump-dom".into()], page).await?;
        if dom.contains("scripts-run") {
            Ok(())
        } else {
            Err(format!("page scripts did not run; DOM:\n{dom}"))
        }
    }

    /// The DOM of `url` after `budget` of virtual time (timers fast-forwarded, network waited
    /// for), so a page that polls has polled several times.
    pub async fn dump_dom(&mut self, url: &str, budget: Duration) -> Result<String, String> {
        let extra = [
            "--dump-dom".to_string(),
            format!("--virtual-time-budget={}", budget.as_millis()),
        ];
        self.run(&extra, url).await
    }

    /// A PNG screenshot of `url` at `width`×`height` after `budget` of virtual time.
    pub async fn screenshot(
        &mut self,
        url: &str,
        out: &Path,
        (width, height): (u32, u32),
        budget: Duration,
    ) -> Result<(), String> {
        let extra = [
            format!("--screenshot={}", out.display()),
            format!("--window-size={width},{height}"),
            format!("--virtual-time-budget={}", budget.as_millis()),
        ];
        self.run(&extra, url).await.map(|_| ())
    }
}

/// The value of attribute `name` in one serialized start tag (`<tr a="1" b="2">`), unescaped.
pub fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Every start tag in `dom` that begins with `prefix` (e.g. `<tr class="forward"`).
pub fn start_tags<'a>(dom: &'a str, prefix: &str) -> Vec<&'a str> {
    dom.match_indices(prefix)
        .filter_map(|(i, _)| dom[i..].find('>').map(|end| &dom[i..=i + end]))
        .collect()
}
