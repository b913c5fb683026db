package signalmesh_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Every Go snippet in README is a run of lines of an Example function, so
// that it compiles and runs (with its output checked) in the tests.
func TestReadmeSnippetsAreExamples(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) == 0 {
		t.Fatal("README has no Go snippet")
	}
	examples := exampleBodies(t)
	for _, b := range blocks {
		snippet := codeLines(b[1])
		found := false
		for name, body := range examples {
			if containsRun(body, snippet) {
				t.Logf("README snippet starting %q is in %s", snippet[0], name)
				found = true
				break
			}
		}
		if !found {
			t.Errorf("README snippet is not part of any Example function:\n%s", b[1])
		}
	}
}

// exampleBodies returns the lines of every Example function in the
// module's test files, by file and name.
func exampleBodies(t *testing.T) map[string][]string {
	out := map[string][]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if ok && strings.HasPrefix(fn.Name.Name, "Example") && fn.Body != nil {
				body := src[fset.Position(fn.Body.Lbrace).Offset:fset.Position(fn.Body.Rbrace).Offset]
				out[path+": "+fn.Name.Name] = codeLines(string(body))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// codeLines are the non-blank lines of code, trimmed.
func codeLines(s string) []string {
	var out []string
	for l := range strings.Lines(s) {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func containsRun(body, run []string) bool {
	for i := range body {
		if len(body)-i >= len(run) && slices.Equal(body[i:i+len(run)], run) {
			return true
		}
	}
	return false
}
