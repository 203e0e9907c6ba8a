#ifndef RELAY_CLIBGIT2_SHIM_H
#define RELAY_CLIBGIT2_SHIM_H

#include <git2.h>

// git_libgit2_opts is variadic and the GIT_*_INIT macros are not imported into Swift,
// so every option and initializer Relay needs gets a small typed wrapper here.

static inline int relay_git_set_ssl_cert_locations(const char *file, const char *dir) {
    return git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, file, dir);
}
static inline int relay_git_set_owner_validation(int enabled) {
    return git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, enabled);
}
static inline int relay_git_set_mwindow_size(size_t size) {
    return git_libgit2_opts(GIT_OPT_SET_MWINDOW_SIZE, size);
}
static inline int relay_git_set_mwindow_mapped_limit(size_t size) {
    return git_libgit2_opts(GIT_OPT_SET_MWINDOW_MAPPED_LIMIT, size);
}
static inline int relay_git_set_cache_max_size(ssize_t size) {
    return git_libgit2_opts(GIT_OPT_SET_CACHE_MAX_SIZE, size);
}
static inline int relay_git_set_user_agent(const char *agent) {
    return git_libgit2_opts(GIT_OPT_SET_USER_AGENT, agent);
}
static inline int relay_git_enable_fsync_gitdir(int enabled) {
    return git_libgit2_opts(GIT_OPT_ENABLE_FSYNC_GITDIR, enabled);
}
static inline int relay_git_fetch_options_init(git_fetch_options *opts) {
    return git_fetch_options_init(opts, GIT_FETCH_OPTIONS_VERSION);
}
static inline int relay_git_remote_callbacks_init(git_remote_callbacks *callbacks) {
    return git_remote_init_callbacks(callbacks, GIT_REMOTE_CALLBACKS_VERSION);
}
static inline int relay_git_remote_create_options_init(git_remote_create_options *opts) {
    return git_remote_create_options_init(opts, GIT_REMOTE_CREATE_OPTIONS_VERSION);
}

#endif
