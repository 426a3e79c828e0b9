# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_upgraderd_global_optspecs
    string join \n app= c/config= state-dir= json v/verbose q/quiet container= data-dir= backup-dir= backup-keep= trigger-dir= docker= h/help V/version
end

function __fish_upgraderd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_upgraderd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_upgraderd_using_subcommand
    set -l cmd (__fish_upgraderd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c upgraderd -n "__fish_upgraderd_needs_command" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_needs_command" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_needs_command" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_needs_command" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_needs_command" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_needs_command" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_needs_command" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_needs_command" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_needs_command" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_needs_command" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "watch" -d 'Run the daemon: turn the app\'s triggers into upgrades, recover interrupted ones'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "upgrade" -d 'Upgrade the service: back up, fetch, switch, health-check, roll back on failure'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "rollback" -d 'Put back the version before an upgrade (default: the last complete one) and its data'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "backup" -d 'Create, list, verify, restore and prune data backups'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "check-version" -d 'Ask the version source for a newer version; optionally trigger or run the upgrade'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "history" -d 'Show past upgrades, newest first'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "status" -d 'Show one upgrade (default: the latest) with its journal'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "config" -d 'Print the effective configuration and where each value came from'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "completions" -d 'Print a shell completion script'
complete -c upgraderd -n "__fish_upgraderd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l alive -d 'Only say whether a `watch` of this state directory is alive: exit 0 when its heartbeat (written every 30 s) is under 90 s old, else 1. For a container\'s HEALTHCHECK'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand watch" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l to -d 'Target version tag, or `latest`' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l strategy -d 'pull (image), rebuild (git + compose build) or swarm (a Swarm service takes it by itself) [default: UPGRADERD_STRATEGY]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l no-backup -d 'Skip the data backup (a rollback then cannot restore data)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l force -d 'Upgrade even to the running version or to an older one'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l dry-run -d 'Run the pre-flight checks and print the commands that would run; change nothing'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand upgrade" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l no-restore-data -d 'Keep the current data instead of restoring the upgrade\'s backup'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l dry-run -d 'Print what would be done; change nothing'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand rollback" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -f -a "create" -d 'Back up the data paths into a new backup (a snapshot, or an archive: UPGRADERD_BACKUP_FORMAT)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -f -a "list" -d 'List the backups in the backup directory, with the disk each holds alone and shares'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -f -a "verify" -d 'Check a backup: every member\'s sha256 against the manifest (and a compressed file\'s checksum)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -f -a "restore" -d 'Restore a backup over the data paths it was taken from (or into --to DIR)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -f -a "export" -d 'Write a backup as one .tar.gz or .tar.zst file (for an off-host copy), checked once written'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -f -a "prune" -d 'Delete old backups, keeping the newest N and the last complete upgrade\'s'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and not __fish_seen_subcommand_from create list verify restore export prune help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from create" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l to -d 'Restore into this directory instead of the original paths' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from restore" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from export" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l keep -d 'Backups to keep [default: UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from prune" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "create" -d 'Back up the data paths into a new backup (a snapshot, or an archive: UPGRADERD_BACKUP_FORMAT)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "list" -d 'List the backups in the backup directory, with the disk each holds alone and shares'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Check a backup: every member\'s sha256 against the manifest (and a compressed file\'s checksum)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "restore" -d 'Restore a backup over the data paths it was taken from (or into --to DIR)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "export" -d 'Write a backup as one .tar.gz or .tar.zst file (for an off-host copy), checked once written'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "prune" -d 'Delete old backups, keeping the newest N and the last complete upgrade\'s'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l exit-code -d 'Exit 10 when an update the policy allows exists (for cron and scripts)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l trigger -d 'Write a trigger for the running `watch` when an allowed update exists'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l upgrade -d 'Run the upgrade here when an allowed update exists (cron without a daemon; takes the lock)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand check-version" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l limit -d 'Show at most N upgrades' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand history" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand status" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand config" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l app -d 'One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -s c -l config -d 'Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l state-dir -d 'Directory holding the state database, the lock and (by default) backups' -r -F
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l container -d 'Container of the service to upgrade [UPGRADERD_CONTAINER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l data-dir -d 'Data paths to back up, comma separated [UPGRADERD_DATA_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l backup-dir -d 'Where backups are written [UPGRADERD_BACKUP_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l backup-keep -d 'How many backups to keep [UPGRADERD_BACKUP_KEEP]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l trigger-dir -d 'Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l docker -d 'Path of the docker program [UPGRADERD_DOCKER]' -r
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -l json -d 'Print machine-readable JSON on stdout (JSON lines for progress)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -s v -l verbose -d 'More log output on stderr (repeat for more)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -s q -l quiet -d 'Only errors on stderr'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -s h -l help -d 'Print help'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand completions" -s V -l version -d 'Print version'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "watch" -d 'Run the daemon: turn the app\'s triggers into upgrades, recover interrupted ones'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "upgrade" -d 'Upgrade the service: back up, fetch, switch, health-check, roll back on failure'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "rollback" -d 'Put back the version before an upgrade (default: the last complete one) and its data'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "backup" -d 'Create, list, verify, restore and prune data backups'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "check-version" -d 'Ask the version source for a newer version; optionally trigger or run the upgrade'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "history" -d 'Show past upgrades, newest first'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "status" -d 'Show one upgrade (default: the latest) with its journal'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "config" -d 'Print the effective configuration and where each value came from'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "completions" -d 'Print a shell completion script'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and not __fish_seen_subcommand_from watch upgrade rollback backup check-version history status config completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and __fish_seen_subcommand_from backup" -f -a "create" -d 'Back up the data paths into a new backup (a snapshot, or an archive: UPGRADERD_BACKUP_FORMAT)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and __fish_seen_subcommand_from backup" -f -a "list" -d 'List the backups in the backup directory, with the disk each holds alone and shares'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and __fish_seen_subcommand_from backup" -f -a "verify" -d 'Check a backup: every member\'s sha256 against the manifest (and a compressed file\'s checksum)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and __fish_seen_subcommand_from backup" -f -a "restore" -d 'Restore a backup over the data paths it was taken from (or into --to DIR)'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and __fish_seen_subcommand_from backup" -f -a "export" -d 'Write a backup as one .tar.gz or .tar.zst file (for an off-host copy), checked once written'
complete -c upgraderd -n "__fish_upgraderd_using_subcommand help; and __fish_seen_subcommand_from backup" -f -a "prune" -d 'Delete old backups, keeping the newest N and the last complete upgrade\'s'
