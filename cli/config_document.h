// The config document (reptrace.v1.TraceConfig) as reptracectl reads and shows it:
// protobuf's JSON mapping with proto field names, KEY=VALUE edits, YAML or JSON files, and
// the text of `config get` / `config history`. Pure functions of their inputs.
//
// Errors are InvalidArgument with a one-line message meant for the user that names the
// key or field at fault. Nothing here checks the rules the controller enforces (ranges,
// filter actions): the controller is the one judge of a document.
#ifndef REPTRACE_CLI_CONFIG_DOCUMENT_H_
#define REPTRACE_CLI_CONFIG_DOCUMENT_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "proto/reptrace.pb.h"

namespace reptrace {
namespace cli {

// The config in protobuf's JSON mapping: proto field names, fields in declaration order,
// primitive and repeated fields always present (so "enabled": false shows), unset
// messages absent, enums by name, 64-bit integers as strings.
nlohmann::ordered_json TraceConfigToJson(const v1::TraceConfig& config);

// The reverse, for any JSON object in that mapping (lowerCamelCase names are accepted
// too). An unknown field is an error naming its path ("sampling.rate").
absl::StatusOr<v1::TraceConfig> TraceConfigFromJson(const nlohmann::ordered_json& json);

// Applies `assignments`, each "KEY=VALUE", in order, to a copy of `config`. KEY is a
// dotted path of fields ("enabled", "sampling.probability"); every step but the last is a
// message field. VALUE is read by the type of that last field: true/false for a bool, a
// number for a number, the text as is for a string or an enum name; JSON for a list or a
// message ("[{\"first\":6379}]"), which replaces the whole field. An unknown key, a
// malformed assignment or a value that does not fit the field is an error naming it.
absl::StatusOr<v1::TraceConfig> ApplyAssignments(const v1::TraceConfig& config,
                                                 const std::vector<std::string>& assignments);

// A whole document from a file's text: JSON when it starts with '{' (after white space),
// YAML otherwise. YAML plain scalars true/false/null and numbers are taken as such,
// anything else (and any quoted scalar) as a string.
absl::StatusOr<v1::TraceConfig> ParseConfigDocument(absl::string_view text);

// {"version", "author", "created_ns", "config": TraceConfigToJson}; version and
// created_ns are JSON integers.
nlohmann::ordered_json ConfigVersionToJson(const v1::ConfigVersion& version);

// {"versions": [ConfigVersionToJson...]}, newest first as the controller sent them.
nlohmann::ordered_json ConfigHistoryToJson(const v1::ListConfigHistoryResponse& response);

// `config get`'s text: "version: N", "author: A", "created: <local time>", then
// "config:" and the document as indented YAML-like lines.
std::string FormatConfigVersion(const v1::ConfigVersion& version, absl::TimeZone zone);

// `config history`'s table: VERSION, AUTHOR, TIME, ENABLED (yes/no), SAMPLING (the
// probability), FILTERS (how many). "no config versions" when empty.
std::string FormatConfigHistory(const v1::ListConfigHistoryResponse& response,
                                absl::TimeZone zone);

}  // namespace cli
}  // namespace reptrace

#endif  // REPTRACE_CLI_CONFIG_DOCUMENT_H_
