//! `sysom-mcp token new|list`: manage the tokens file without ever storing a token.

use std::path::PathBuf;

use crate::{
    auth::{
        scope::Scopes,
        tokens::{self, DEFAULT_TOKENS_FILE, Tokens},
    },
    config::{self, ServerArgs, TokenAction},
    credentials,
    exit::StartError,
};

fn fail(message: impl std::fmt::Display) -> StartError {
    StartError::TokenCommand(message.to_string())
}

pub fn run(action: TokenAction, args: &ServerArgs) -> Result<(), StartError> {
    let configured = || {
        config::load(args, &config::process_env)
            .map(|c| c.auth.token_files)
            .unwrap_or_else(|_| args.token_file.clone())
    };
    match action {
        TokenAction::New { name, scopes, file } => {
            let scopes = Scopes::parse_list(&scopes.join(",")).map_err(fail)?;
            let file = file
                .or_else(|| configured().into_iter().next())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKENS_FILE));
            let token = tokens::append_new(&file, &name, scopes).map_err(fail)?;
            // The token goes to stdout alone, so `token new x > file` captures just it.
            println!("{token}");
            eprintln!(
                "sysom-mcp: token {name:?} ({scopes}) added to {}; only its SHA-256 is stored, \
                 so copy it now. Reload the service (systemctl reload sysom-mcp) to accept it.",
                file.display()
            );
            Ok(())
        }
        TokenAction::List { file } => {
            let loaded = match file {
                Some(f) => Tokens::load(&[f], None),
                None => {
                    let files = configured();
                    let dir = credentials::credentials_dir(&config::process_env);
                    let default = PathBuf::from(DEFAULT_TOKENS_FILE);
                    if files.is_empty() && dir.is_none() && default.exists() {
                        Tokens::load(&[default], None)
                    } else {
                        Tokens::load(&files, dir.as_deref())
                    }
                }
            };
            print!("{}", tokens::describe(&loaded.map_err(fail)?));
            Ok(())
        }
    }
}
