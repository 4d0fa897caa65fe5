//! `cairn key`: the uploader identity.

use clap::Subcommand;
use serde_json::json;

use cairn_client::keys;

use crate::cli::Global;
use crate::ui::out;

#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Create a new key (mode 0600).
    Generate,
    /// Print the public key and where the key file is.
    Show,
}

pub(crate) fn run(g: &Global, args: &Args) -> anyhow::Result<()> {
    let path = g.key_path();
    let key = match args.action {
        Action::Generate => keys::generate(&path)?,
        Action::Show => keys::load(&path)?,
    };
    if g.json {
        out!(
            "{}",
            json!({ "public_key": keys::public_hex(&key), "path": path })
        );
    } else {
        if matches!(args.action, Action::Generate) {
            out!(
                "created {} (mode 0600: keep it secret, back it up)",
                path.display()
            );
        }
        out!("public key: {}", keys::public_hex(&key));
        out!("key file:   {}", path.display());
    }
    Ok(())
}
