#include "trainyard/tracking/entries.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace trainyard::tracking {
namespace {

using ::testing::HasSubstr;

std::string Err(std::string_view body) { return ParseEntriesJson(body).status().message(); }

TEST(Entries, ParsesEveryKind) {
  auto e = ParseEntriesJson(R"({"entries": [
    {"name": "l", "kind": "list", "value": [1, 2.5, "NaN"], "step": 3},
    {"name": "r", "kind": "row", "value": {"a": 1, "b": "-Infinity"}, "description": "d"},
    {"name": "t", "kind": "table", "value": {"x": [1, 2], "y": [3, 4]}, "timestamp": 17},
    {"name": "i", "kind": "image", "value": {"path": "images/i/0.png"}}]})");
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  ASSERT_EQ(e->size(), 4u);
  EXPECT_EQ((*e)[0].kind, EntryKind::kList);
  EXPECT_EQ((*e)[0].value_json, R"([1,2.5,"NaN"])");
  EXPECT_EQ((*e)[0].step, 3);
  EXPECT_EQ((*e)[1].description, "d");
  EXPECT_EQ((*e)[2].timestamp, 17);
  EXPECT_FALSE((*e)[3].step.has_value());
  EXPECT_EQ((*e)[3].kind, EntryKind::kImage);
  for (const auto& x : *e) EXPECT_TRUE(ValidateEntry(x).ok());
  EXPECT_THAT(EntriesToJson(*e), HasSubstr(R"({"name":"l","kind":"list","value":[1,2.5,"NaN"],)"
                                           R"("step":3,"description":"","timestamp":null})"));
}

TEST(Entries, ErrorsNameTheEntry) {
  EXPECT_THAT(Err(R"({"entries":[{"name":"a","kind":"list","value":[1]},
                    {"name":"b","kind":"list","value":[1,"x"]}]})"),
              HasSubstr("entry 1 (\"b\"): value[1] is a string, not a number"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"r","kind":"row","value":[1]}]})"),
              HasSubstr("entry 0 (\"r\"): value: a row is an object, not an array"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"r","kind":"row","value":{"a":{}}}]})"),
              HasSubstr("value[\"a\"] is an object, not a number"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"t","kind":"table","value":{"x":[1],"y":[1,2]}}]})"),
              HasSubstr("column \"y\" has 2 rows but column \"x\" has 1"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"t","kind":"table","value":{"x":1}}]})"),
              HasSubstr("value[\"x\"] is a number, expected an array"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"i","kind":"image","value":{"path":"../x.png"}}]})"),
              HasSubstr("has an empty, . or .. part"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"i","kind":"image","value":{"path":"/x.png"}}]})"),
              HasSubstr("not a relative file path"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"i","kind":"image","value":"x.png"}]})"),
              HasSubstr("an image is {\"path\""));
  EXPECT_THAT(Err(R"({"entries":[{"name":"i","kind":"video","value":1}]})"),
              HasSubstr("unknown kind \"video\""));
  EXPECT_THAT(Err(R"({"entries":[{"name":"","kind":"list","value":[]}]})"),
              HasSubstr("entry 0 (\"\"): the name is empty"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"s","kind":"list","value":[],"step":1.5}]})"),
              HasSubstr("\"step\" must be an integer"));
  EXPECT_THAT(Err(R"({"entries":[{"name":"s","kind":"list","value":[],"colour":1}]})"),
              HasSubstr("unknown field \"colour\""));
  EXPECT_THAT(Err(R"({"entries":[{"name":"s","kind":"list"}]})"), HasSubstr("no \"value\""));
  EXPECT_THAT(Err(R"({"entrie":[]})"), HasSubstr("{\"entries\": [...]}"));
  EXPECT_THAT(Err(R"({"entries":[)"), HasSubstr("malformed JSON"));
}

}  // namespace
}  // namespace trainyard::tracking
