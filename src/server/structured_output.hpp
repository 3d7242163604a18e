// response_format json_object / json_schema: the request's schema compiled to a grammar (cached
// per schema) and a token constraint for one sequence over the model's vocabulary (src/grammar/).
#pragma once

#include <memory>

#include "lathe/lathe.hpp"
#include "sample/constraint.hpp"
#include "server/request.hpp"

namespace lathe::server {

// ApiError 400 naming the schema keyword lathe cannot enforce (never silently unconstrained).
std::shared_ptr<TokenConstraint> make_constraint(const std::shared_ptr<const Model>& model,
                                                 const CompletionRequest& request);

}  // namespace lathe::server
