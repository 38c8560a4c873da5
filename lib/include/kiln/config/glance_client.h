// The Glance client the settings describe, for every front end (kilnctl,
// kilnd): Keystone's tokens when [keystone] is set, else the static
// [glance] auth_token, else none; endpoints from [glance] api_servers, else
// the image endpoints of Keystone's catalog.
#pragma once

#include <memory>

#include "kiln/config/settings.h"
#include "kiln/glance/client.h"

namespace kiln::config {

// Throws kiln::Error kInvalidArgument when no endpoint is configured or found,
// and what Keystone's login throws when the catalog is needed.
std::unique_ptr<glance::GlanceClient> make_glance_client(const Settings& settings);

}  // namespace kiln::config
