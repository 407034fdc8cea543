#include "cli/config_document.h"

#include <cstdlib>
#include <exception>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cli/text_output.h"
#include "common/status_macros.h"
#include "common/trace_config.h"

namespace reptrace {
namespace cli {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using Json = nlohmann::ordered_json;

// The field of `message` called `name` (its proto name or its JSON name), or null.
const FieldDescriptor* FindField(const Descriptor& message, absl::string_view name) {
  for (int i = 0; i < message.field_count(); ++i) {
    const FieldDescriptor* field = message.field(i);
    if (field->name() == name || field->json_name() == name) return field;
  }
  return nullptr;
}

std::string FieldNames(const Descriptor& message) {
  std::vector<std::string> names;
  for (int i = 0; i < message.field_count(); ++i) names.push_back(message.field(i)->name());
  return absl::StrJoin(names, ", ");
}

absl::Status UnknownField(absl::string_view what, absl::string_view path,
                          const Descriptor& message, absl::string_view name) {
  return absl::InvalidArgumentError(
      absl::StrFormat("unknown %s \"%s\": %s has no field \"%s\" (its fields: %s)", what, path,
                      message.name(), name, FieldNames(message)));
}

// Every object key in `json` names a field of `message`, recursively; protobuf's own
// parser says only "Cannot find field" without the path.
absl::Status CheckFieldNames(const Json& json, const Descriptor& message,
                             const std::string& prefix) {
  if (!json.is_object()) return absl::OkStatus();  // a type error: protobuf's to report
  for (const auto& [key, value] : json.items()) {
    const std::string path = prefix.empty() ? key : absl::StrCat(prefix, ".", key);
    const FieldDescriptor* field = FindField(message, key);
    if (field == nullptr) return UnknownField("config field", path, message, key);
    if (field->type() != FieldDescriptor::TYPE_MESSAGE) continue;
    if (field->is_repeated() && value.is_array()) {
      for (size_t i = 0; i < value.size(); ++i) {
        RETURN_IF_ERROR(CheckFieldNames(value[i], *field->message_type(),
                                        absl::StrCat(path, "[", i, "]")));
      }
    } else if (!field->is_repeated()) {
      RETURN_IF_ERROR(CheckFieldNames(value, *field->message_type(), path));
    }
  }
  return absl::OkStatus();
}

// "KEY" of an assignment: the fields along the path, the last one returned.
absl::StatusOr<const FieldDescriptor*> ResolveKey(absl::string_view key,
                                                  std::vector<std::string>* names) {
  const Descriptor* message = v1::TraceConfig::descriptor();
  const FieldDescriptor* field = nullptr;
  std::vector<std::string> parts = absl::StrSplit(key, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("bad config key \"", key, "\""));
    }
    if (field != nullptr) {
      if (field->type() != FieldDescriptor::TYPE_MESSAGE || field->is_repeated()) {
        return absl::InvalidArgumentError(absl::StrFormat(
            "bad config key \"%s\": \"%s\" is not a message field (set a list whole, as JSON)",
            key, field->name()));
      }
      message = field->message_type();
    }
    field = FindField(*message, parts[i]);
    if (field == nullptr) return UnknownField("config key", key, *message, parts[i]);
    names->push_back(field->name());
  }
  return field;
}

absl::Status BadValue(absl::string_view key, absl::string_view expected,
                      absl::string_view text) {
  return absl::InvalidArgumentError(
      absl::StrFormat("bad value for %s: expected %s, got \"%s\"", key, expected, text));
}

// VALUE of an assignment, as the JSON that `field` takes.
absl::StatusOr<Json> ParseValue(absl::string_view key, const FieldDescriptor& field,
                                const std::string& text) {
  if (field.is_repeated() || field.type() == FieldDescriptor::TYPE_MESSAGE) {
    Json value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (field.is_repeated() && !value.is_array()) {
      return BadValue(key, "a JSON list such as [] or [{...}]", text);
    }
    if (!field.is_repeated() && !value.is_object()) {
      return BadValue(key, "a JSON object such as {...}", text);
    }
    return value;
  }
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_BOOL:
      if (text == "true") return Json(true);
      if (text == "false") return Json(false);
      return BadValue(key, "true or false", text);
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
    case FieldDescriptor::CPPTYPE_FLOAT:
    case FieldDescriptor::CPPTYPE_DOUBLE: {
      Json value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (!value.is_number()) return BadValue(key, "a number", text);
      return value;
    }
    case FieldDescriptor::CPPTYPE_ENUM: {
      Json value = Json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (value.is_number_integer()) return value;
      return Json(text);
    }
    case FieldDescriptor::CPPTYPE_STRING:
    case FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return Json(text);
}

// A YAML node as the JSON value it reads as (see ParseConfigDocument).
Json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return Json(nullptr);
    case YAML::NodeType::Scalar: {
      const std::string& text = node.Scalar();
      if (node.Tag() == "!") return Json(text);  // quoted: a string
      if (text == "true" || text == "True" || text == "TRUE") return Json(true);
      if (text == "false" || text == "False" || text == "FALSE") return Json(false);
      if (text == "null" || text == "~") return Json(nullptr);
      Json number = Json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (number.is_number()) return number;
      return Json(text);
    }
    case YAML::NodeType::Sequence: {
      Json array = Json::array();
      for (const YAML::Node& item : node) array.push_back(YamlToJson(item));
      return array;
    }
    case YAML::NodeType::Map: {
      Json object = Json::object();
      for (const auto& entry : node) object[entry.first.Scalar()] = YamlToJson(entry.second);
      return object;
    }
  }
  return Json(nullptr);
}

// Strips nlohmann's "[json.exception.parse_error.101] " from an exception's text.
std::string JsonErrorText(const std::exception& error) {
  absl::string_view text = error.what();
  if (absl::StartsWith(text, "[json.exception.")) {
    size_t end = text.find("] ");
    if (end != absl::string_view::npos) text.remove_prefix(end + 2);
  }
  return std::string(text);
}

bool IsPlainScalar(absl::string_view text) {
  if (text.empty() || text == "true" || text == "false" || text == "null") return false;
  if (text[0] == '-' || text[0] == '.') return false;
  for (char c : text) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && absl::string_view("_.:/@+-").find(c) == absl::string_view::npos) {
      return false;
    }
  }
  return true;
}

std::string ScalarText(const Json& value) {
  if (value.is_string()) {
    const std::string& text = value.get_ref<const std::string&>();
    return IsPlainScalar(text) ? text : value.dump();
  }
  return value.dump();
}

bool AllScalars(const Json& array) {
  for (const Json& item : array) {
    if (item.is_structured()) return false;
  }
  return true;
}

// The fields of `object`, one per line at `indent`, YAML style.
void AppendYamlLike(const Json& object, int indent, std::string* out) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  for (const auto& [key, value] : object.items()) {
    absl::StrAppend(out, pad, key, ":");
    if (value.is_object()) {
      if (value.empty()) {
        absl::StrAppend(out, " {}\n");
      } else {
        absl::StrAppend(out, "\n");
        AppendYamlLike(value, indent + 2, out);
      }
    } else if (value.is_array()) {
      if (AllScalars(value)) {
        std::vector<std::string> items;
        for (const Json& item : value) items.push_back(ScalarText(item));
        absl::StrAppend(out, " [", absl::StrJoin(items, ", "), "]\n");
        continue;
      }
      absl::StrAppend(out, "\n");
      for (const Json& item : value) {
        // An object item: its first line starts with "- " two columns in.
        std::string lines;
        if (item.is_object() && !item.empty()) {
          AppendYamlLike(item, indent + 4, &lines);
          lines.replace(0, static_cast<size_t>(indent) + 4, pad + "  - ");
        } else {
          lines = absl::StrCat(pad, "  - ", item.is_structured() ? item.dump() : ScalarText(item),
                               "\n");
        }
        absl::StrAppend(out, lines);
      }
    } else {
      absl::StrAppend(out, " ", ScalarText(value), "\n");
    }
  }
}

}  // namespace

// `json` (a message of type `type`, as protobuf printed it) with its keys in field-number
// order: protobuf's printer puts the fields with presence (proto3 `optional`) last.
Json InFieldOrder(const Json& json, const google::protobuf::Descriptor& type) {
  if (!json.is_object()) return json;
  Json ordered = Json::object();
  for (int i = 0; i < type.field_count(); ++i) {
    const FieldDescriptor* field = type.field(i);
    auto it = json.find(field->name());
    if (it == json.end()) continue;
    if (field->message_type() == nullptr) {
      ordered[field->name()] = *it;
    } else if (it->is_array()) {
      Json items = Json::array();
      for (const Json& item : *it) items.push_back(InFieldOrder(item, *field->message_type()));
      ordered[field->name()] = std::move(items);
    } else {
      ordered[field->name()] = InFieldOrder(*it, *field->message_type());
    }
  }
  return ordered;
}

Json TraceConfigToJson(const v1::TraceConfig& config) {
  // The effective values of the fields left out (common/trace_config.h), shown as such.
  v1::TraceConfig shown = config;
  shown.set_enabled(ConfigEnabled(config));
  shown.set_capture_bytes(ConfigCaptureBytes(config));
  shown.mutable_sampling()->set_probability(SamplingProbability(config));
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string text;
  auto status = google::protobuf::util::MessageToJsonString(shown, &text, options);
  if (!status.ok()) {
    // Cannot happen: every TraceConfig has a JSON form.
    std::abort();
  }
  return InFieldOrder(Json::parse(text), *v1::TraceConfig::descriptor());
}

absl::StatusOr<v1::TraceConfig> TraceConfigFromJson(const Json& json) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError("the config must be a JSON object (a YAML mapping)");
  }
  RETURN_IF_ERROR(CheckFieldNames(json, *v1::TraceConfig::descriptor(), ""));
  v1::TraceConfig config;
  auto status = google::protobuf::util::JsonStringToMessage(json.dump(), &config);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("bad config: ", std::string(status.message())));
  }
  return config;
}

absl::StatusOr<v1::TraceConfig> ApplyAssignments(const v1::TraceConfig& config,
                                                 const std::vector<std::string>& assignments) {
  Json document = TraceConfigToJson(config);
  for (const std::string& assignment : assignments) {
    const size_t eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad assignment \"", assignment, "\": expected KEY=VALUE"));
    }
    const std::string key = assignment.substr(0, eq);
    const std::string text = assignment.substr(eq + 1);
    std::vector<std::string> names;
    ASSIGN_OR_RETURN(const FieldDescriptor* field, ResolveKey(key, &names));
    ASSIGN_OR_RETURN(Json value, ParseValue(key, *field, text));

    Json* node = &document;
    for (size_t i = 0; i + 1 < names.size(); ++i) {
      node = &(*node)[names[i]];
      if (!node->is_object()) *node = Json::object();  // a message that was unset
    }
    (*node)[names.back()] = std::move(value);
    // Checked one assignment at a time, so the error names the key at fault.
    absl::StatusOr<v1::TraceConfig> checked = TraceConfigFromJson(document);
    if (!checked.ok()) {
      absl::string_view reason = checked.status().message();
      absl::ConsumePrefix(&reason, "bad config: ");
      return absl::InvalidArgumentError(absl::StrCat("bad value for ", key, ": ", reason));
    }
  }
  return TraceConfigFromJson(document);
}

absl::StatusOr<v1::TraceConfig> ParseConfigDocument(absl::string_view text) {
  absl::string_view start = absl::StripLeadingAsciiWhitespace(text);
  Json json;
  if (absl::StartsWith(start, "{")) {
    try {
      json = Json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::parse_error& error) {
      return absl::InvalidArgumentError(absl::StrCat("bad JSON: ", JsonErrorText(error)));
    }
  } else {
    try {
      YAML::Node root = YAML::Load(std::string(text));
      if (root.IsNull()) {
        return absl::InvalidArgumentError(
            "no config in it (expected a mapping of config fields, or a JSON object)");
      }
      if (!root.IsMap()) {
        return absl::InvalidArgumentError(
            "bad YAML: expected a mapping of config fields (or a JSON object)");
      }
      json = YamlToJson(root);
    } catch (const YAML::Exception& error) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "bad YAML at line %d, column %d: %s", error.mark.line + 1, error.mark.column + 1,
          error.msg));
    }
  }
  return TraceConfigFromJson(json);
}

Json ConfigVersionToJson(const v1::ConfigVersion& version) {
  Json json = Json::object();
  json["version"] = version.version();
  json["author"] = version.author();
  json["created_ns"] = version.created_ns();
  json["config"] = TraceConfigToJson(version.config());
  return json;
}

Json ConfigHistoryToJson(const v1::ListConfigHistoryResponse& response) {
  Json versions = Json::array();
  for (const v1::ConfigVersion& version : response.versions()) {
    versions.push_back(ConfigVersionToJson(version));
  }
  Json json = Json::object();
  json["versions"] = std::move(versions);
  return json;
}

std::string FormatConfigVersion(const v1::ConfigVersion& version, absl::TimeZone zone) {
  std::string out = absl::StrCat("version: ", version.version(), "\n",
                                 "author: ", ScalarText(Json(version.author())), "\n",
                                 "created: ", FormatTimestamp(version.created_ns(), zone), "\n",
                                 "config:\n");
  AppendYamlLike(TraceConfigToJson(version.config()), 2, &out);
  return out;
}

std::string FormatConfigHistory(const v1::ListConfigHistoryResponse& response,
                                absl::TimeZone zone) {
  if (response.versions().empty()) return "no config versions\n";
  std::vector<std::vector<std::string>> rows;
  for (const v1::ConfigVersion& version : response.versions()) {
    const v1::TraceConfig& config = version.config();
    rows.push_back({
        absl::StrCat(version.version()),
        version.author().empty() ? "-" : version.author(),
        FormatTimestamp(version.created_ns(), zone),
        ConfigEnabled(config) ? "yes" : "no",
        absl::StrFormat("%g", SamplingProbability(config)),
        absl::StrCat(config.filters_size()),
    });
  }
  return RenderTable({"VERSION", "AUTHOR", "TIME", "ENABLED", "SAMPLING", "FILTERS"}, rows);
}

}  // namespace cli
}  // namespace reptrace
